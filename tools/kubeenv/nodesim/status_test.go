package main

import (
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func settings() Settings {
	return Settings{BadImages: regexp.MustCompile(defaultBad), CrashEvery: 10 * time.Second, JobRunTime: 2 * time.Second, HostIP: "127.0.0.1"}
}

func noIDs(image string) string { return "" }

func pod(image string, policy corev1.RestartPolicy) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid-1"},
		Spec: corev1.PodSpec{
			NodeName:      "n",
			RestartPolicy: policy,
			Containers:    []corev1.Container{{Name: "web", Image: image}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
}

func condition(st *corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// apply runs the simulator on the pod at time now and writes the status it decides.
func apply(t *testing.T, p *corev1.Pod, now time.Time) Outcome {
	t.Helper()
	out := Decide(p, settings(), noIDs, now)
	if out.Status != nil {
		p.Status = *out.Status
	}
	return out
}

func TestGoodPodRunsReady(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyAlways)
	out := apply(t, p, t0)
	if out.Status == nil {
		t.Fatal("a pending pod must get a status")
	}
	if p.Status.Phase != corev1.PodRunning || condition(&p.Status, corev1.PodReady) != corev1.ConditionTrue ||
		condition(&p.Status, corev1.ContainersReady) != corev1.ConditionTrue {
		t.Fatalf("want Running and Ready, got %s %+v", p.Status.Phase, p.Status.Conditions)
	}
	cs := p.Status.ContainerStatuses[0]
	if !cs.Ready || cs.State.Running == nil || cs.RestartCount != 0 {
		t.Fatalf("container: %+v", cs)
	}
	if p.Status.PodIP == "" || p.Status.HostIP != "127.0.0.1" {
		t.Fatalf("addresses: pod %q host %q", p.Status.PodIP, p.Status.HostIP)
	}
	// Nothing changes later: no second write, no timer.
	if again := apply(t, p, t0.Add(time.Minute)); again.Status != nil || again.Again != 0 {
		t.Fatalf("a settled pod was written again: %+v", again)
	}
}

func TestBadImageCrashLoopsWithRisingRestarts(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.2", corev1.RestartPolicyAlways)
	out := apply(t, p, t0)
	cs := p.Status.ContainerStatuses[0]
	if cs.Ready || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" {
		t.Fatalf("want CrashLoopBackOff, got %+v", cs.State)
	}
	if p.Status.Phase != corev1.PodRunning || condition(&p.Status, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("want Running and not Ready, got %s %+v", p.Status.Phase, p.Status.Conditions)
	}
	if out.Again != 10*time.Second {
		t.Fatalf("next crash in %v, want 10s", out.Again)
	}
	// Before the interval: unchanged. After it: one more restart each time.
	if o := apply(t, p, t0.Add(5*time.Second)); o.Status != nil || o.Again != 5*time.Second {
		t.Fatalf("early look: %+v", o)
	}
	apply(t, p, t0.Add(10*time.Second))
	apply(t, p, t0.Add(20*time.Second))
	if got := p.Status.ContainerStatuses[0].RestartCount; got != 2 {
		t.Fatalf("restartCount %d, want 2", got)
	}
	if lt := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; lt == nil || lt.ExitCode != 1 {
		t.Fatalf("last termination: %+v", lt)
	}
}

func TestBadImagesRegexIsConfigurable(t *testing.T) {
	s := settings()
	s.BadImages = regexp.MustCompile(`/broken:`)
	p := pod("127.0.0.1:5001/demo/web:1.0.2", corev1.RestartPolicyAlways)
	if st := Decide(p, s, noIDs, t0).Status; !st.ContainerStatuses[0].Ready {
		t.Fatal("1.0.2 is bad only under the default pattern")
	}
	p = pod("127.0.0.1:5001/demo/broken:1", corev1.RestartPolicyAlways)
	if st := Decide(p, s, noIDs, t0).Status; st.ContainerStatuses[0].Ready {
		t.Fatal("an image matching the configured pattern must not be ready")
	}
}

func TestReadinessGatesHoldReady(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyAlways)
	p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/lb"}}
	apply(t, p, t0)
	if condition(&p.Status, corev1.ContainersReady) != corev1.ConditionTrue || condition(&p.Status, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("gate not met: want ContainersReady and not Ready, got %+v", p.Status.Conditions)
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: "example.com/lb", Status: corev1.ConditionTrue})
	apply(t, p, t0.Add(time.Second))
	if condition(&p.Status, corev1.PodReady) != corev1.ConditionTrue {
		t.Fatalf("gate met: want Ready, got %+v", p.Status.Conditions)
	}
	if condition(&p.Status, "example.com/lb") != corev1.ConditionTrue {
		t.Fatal("the gate's own condition must be kept")
	}
}

func TestReadinessProbeDelay(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyAlways)
	p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{InitialDelaySeconds: 5}
	out := apply(t, p, t0)
	if p.Status.ContainerStatuses[0].Ready || out.Again != 5*time.Second {
		t.Fatalf("want not ready for 5s, got ready=%v again=%v", p.Status.ContainerStatuses[0].Ready, out.Again)
	}
	apply(t, p, t0.Add(5*time.Second))
	if !p.Status.ContainerStatuses[0].Ready || condition(&p.Status, corev1.PodReady) != corev1.ConditionTrue {
		t.Fatal("want ready after the initial delay")
	}
}

func TestJobPodsComplete(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyNever)
	out := apply(t, p, t0)
	if p.Status.Phase != corev1.PodRunning || out.Again != 2*time.Second {
		t.Fatalf("want Running then a look in 2s, got %s %v", p.Status.Phase, out.Again)
	}
	apply(t, p, t0.Add(2*time.Second))
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("want Succeeded, got %s", p.Status.Phase)
	}
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 {
		t.Fatalf("want exit 0, got %+v", p.Status.ContainerStatuses[0].State)
	}
	if condition(&p.Status, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatal("a completed pod is not Ready")
	}
	if o := apply(t, p, t0.Add(time.Hour)); o.Status != nil {
		t.Fatal("a finished pod must be left alone")
	}
}

func TestBadJobPodFails(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.2", corev1.RestartPolicyNever)
	apply(t, p, t0)
	apply(t, p, t0.Add(2*time.Second))
	if p.Status.Phase != corev1.PodFailed || p.Status.ContainerStatuses[0].State.Terminated.ExitCode != 1 {
		t.Fatalf("want Failed with exit 1, got %s %+v", p.Status.Phase, p.Status.ContainerStatuses[0].State)
	}
}

func TestDeletingPodIsDeleted(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyAlways)
	now := metav1.NewTime(t0)
	p.DeletionTimestamp = &now
	if out := Decide(p, settings(), noIDs, t0); !out.Delete || out.Status != nil {
		t.Fatalf("want delete, got %+v", out)
	}
}

func TestImageIDIsReported(t *testing.T) {
	p := pod("127.0.0.1:5001/demo/web:1.0.0", corev1.RestartPolicyAlways)
	ids := func(image string) string { return "127.0.0.1:5001/demo/web@sha256:abc" }
	st := Decide(p, settings(), ids, t0).Status
	if st.ContainerStatuses[0].ImageID != "127.0.0.1:5001/demo/web@sha256:abc" {
		t.Fatalf("imageID %q", st.ContainerStatuses[0].ImageID)
	}
}

func TestDigestResolutionStaysOnLoopback(t *testing.T) {
	d := newDigests()
	for _, image := range []string{"docker.io/library/nginx:1", "nginx", "10.0.0.1:5000/x:1", "registry.example:443/a/b:c"} {
		if got := d.resolve(image); got != "" {
			t.Fatalf("%s resolved to %q without asking a loopback registry", image, got)
		}
	}
}
