package main

// The pod status a kubelet would report, as a pure function of the pod, the simulator's settings
// and the time, so that it can be tested without an apiserver. It must not talk to anything.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Settings says how simulated containers behave.
type Settings struct {
	// BadImages matches the image references whose containers never become ready: they crash
	// (CrashLoopBackOff, restartCount rising) or, in a pod that is never restarted, fail.
	BadImages *regexp.Regexp
	// CrashEvery is how long a bad container "runs" before each simulated crash.
	CrashEvery time.Duration
	// JobRunTime is how long a container of a pod that is not restarted (Jobs) runs before it
	// completes.
	JobRunTime time.Duration
	// HostIP is the node's address, reported as the pods' hostIP.
	HostIP string
}

// ImageIDs resolves an image reference to the imageID a runtime would report
// ("repo@sha256:..."), or "" when it cannot be known.
type ImageIDs func(image string) string

// Outcome is what the simulator should do with a pod.
type Outcome struct {
	// Delete: the pod is being deleted gracefully; finish it with grace period 0.
	Delete bool
	// Status to write, or nil when the current one is already right.
	Status *corev1.PodStatus
	// Again: look at the pod again after this long (0: only on its next change).
	Again time.Duration
}

func (s Settings) isBad(image string) bool {
	return s.BadImages != nil && s.BadImages.MatchString(image)
}

// restarted reports whether the kubelet restarts this pod's containers when they exit.
func restarted(pod *corev1.Pod) bool {
	return pod.Spec.RestartPolicy == "" || pod.Spec.RestartPolicy == corev1.RestartPolicyAlways
}

// containerID is stable per pod, container and restart, as a runtime's would be.
func containerID(pod *corev1.Pod, name string, restarts int32) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", pod.UID, name, restarts)))
	return "containerd://" + hex.EncodeToString(sum[:])
}

// PodIP gives each pod an address of its own, derived from its UID. Nothing is ever sent to it
// (there is no pod network); it exists so that Endpoints and EndpointSlices have something to list.
func PodIP(pod *corev1.Pod) string {
	sum := sha256.Sum256([]byte(pod.UID))
	return fmt.Sprintf("10.244.%d.%d", sum[0], 1+sum[1]%253)
}

// Decide is the simulated kubelet: given the pod as the apiserver has it, what should it become?
func Decide(pod *corev1.Pod, s Settings, ids ImageIDs, now time.Time) Outcome {
	if pod.DeletionTimestamp != nil {
		return Outcome{Delete: true}
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return Outcome{}
	}
	mnow := metav1.NewTime(now.Truncate(time.Second))
	old := pod.Status
	st := *old.DeepCopy()
	if st.StartTime == nil {
		st.StartTime = &mnow
	}
	started := st.StartTime.Time
	st.HostIP = s.HostIP
	st.HostIPs = []corev1.HostIP{{IP: s.HostIP}}
	if st.PodIP == "" {
		ip := PodIP(pod)
		st.PodIP = ip
		st.PodIPs = []corev1.PodIP{{IP: ip}}
	}

	oldStatus := map[string]corev1.ContainerStatus{}
	for _, c := range old.ContainerStatuses {
		oldStatus[c.Name] = c
	}

	again := time.Duration(0)
	later := func(d time.Duration) {
		if d <= 0 {
			d = time.Second
		}
		if again == 0 || d < again {
			again = d
		}
	}

	// Init containers (not sidecars) have run to completion by the time the pod starts.
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     ids(c.Image),
			ContainerID: containerID(pod, c.Name, 0),
			Ready:       true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: *st.StartTime, FinishedAt: *st.StartTime,
				ContainerID: containerID(pod, c.Name, 0),
			}},
		})
	}

	allReady := true
	allDone := true
	anyFailed := false
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		prev, had := oldStatus[c.Name]
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, RestartCount: prev.RestartCount}
		if had && prev.ImageID != "" && prev.Image == c.Image {
			cs.ImageID = prev.ImageID
		} else {
			cs.ImageID = ids(c.Image)
		}
		bad := s.isBad(c.Image)
		switch {
		case bad && restarted(pod) || bad && pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure:
			// Crash loop: each CrashEvery after the last crash (or the start) it crashes again.
			last := started
			if prev.LastTerminationState.Terminated != nil {
				last = prev.LastTerminationState.Terminated.FinishedAt.Time
			}
			restarts := prev.RestartCount
			if !had || now.Sub(last) >= s.CrashEvery {
				if had {
					restarts++
				}
				last = mnow.Time
			}
			cs.RestartCount = restarts
			cs.ContainerID = containerID(pod, c.Name, restarts)
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", ContainerID: cs.ContainerID,
				StartedAt:  metav1.NewTime(last.Add(-time.Second)),
				FinishedAt: metav1.NewTime(last),
			}}
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID),
			}}
			f := false
			cs.Started = &f
			allReady = false
			allDone = false
			later(last.Add(s.CrashEvery).Sub(now))
		case !restarted(pod) && now.Sub(started) >= s.JobRunTime:
			// A container of a pod that is not restarted (a Job's) has finished.
			code, reason := int32(0), "Completed"
			if bad {
				code, reason = 1, "Error"
				anyFailed = true
			}
			cs.ContainerID = containerID(pod, c.Name, 0)
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, ContainerID: cs.ContainerID,
				StartedAt: *st.StartTime, FinishedAt: mnow,
			}}
			f := false
			cs.Started = &f
			allReady = false
		default:
			cs.ContainerID = containerID(pod, c.Name, cs.RestartCount)
			since := *st.StartTime
			if had && prev.State.Running != nil {
				since = prev.State.Running.StartedAt
			}
			cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: since}}
			t := true
			cs.Started = &t
			cs.Ready = true
			if p := c.ReadinessProbe; p != nil && p.InitialDelaySeconds > 0 {
				readyAt := since.Add(time.Duration(p.InitialDelaySeconds) * time.Second)
				if now.Before(readyAt) {
					cs.Ready = false
					later(readyAt.Sub(now))
				}
			}
			if !cs.Ready {
				allReady = false
			}
			allDone = false
			if !restarted(pod) {
				later(started.Add(s.JobRunTime).Sub(now))
			}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	switch {
	case allDone && len(pod.Spec.Containers) > 0 && anyFailed:
		st.Phase = corev1.PodFailed
	case allDone && len(pod.Spec.Containers) > 0:
		st.Phase = corev1.PodSucceeded
	default:
		st.Phase = corev1.PodRunning
	}

	// Readiness gates: the pod is Ready only when every gate's condition is True as well.
	gatesOK := true
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range old.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			gatesOK = false
		}
	}

	done := st.Phase != corev1.PodRunning
	containersReady, ready := cond(allReady && !done), cond(allReady && !done && gatesOK)
	reason := ""
	switch {
	case done:
		reason = "PodCompleted"
	case !allReady:
		reason = "ContainersNotReady"
	case !gatesOK:
		reason = "ReadinessGatesNotReady"
	}
	st.Conditions = setCondition(st.Conditions, corev1.PodScheduled, corev1.ConditionTrue, "", mnow)
	st.Conditions = setCondition(st.Conditions, corev1.PodReadyToStartContainers, cond(!done), "", mnow)
	st.Conditions = setCondition(st.Conditions, corev1.PodInitialized, corev1.ConditionTrue, "", mnow)
	st.Conditions = setCondition(st.Conditions, corev1.ContainersReady, containersReady, crReason(reason), mnow)
	st.Conditions = setCondition(st.Conditions, corev1.PodReady, ready, reason, mnow)

	if equalStatus(&old, &st) {
		return Outcome{Again: again}
	}
	return Outcome{Status: &st, Again: again}
}

func cond(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}

func crReason(r string) string {
	if r == "ReadinessGatesNotReady" {
		return ""
	}
	return r
}

// setCondition sets a condition, keeping its transition time when its status does not change.
func setCondition(cs []corev1.PodCondition, t corev1.PodConditionType, s corev1.ConditionStatus, reason string, now metav1.Time) []corev1.PodCondition {
	for i := range cs {
		if cs[i].Type == t {
			if cs[i].Status != s {
				cs[i].LastTransitionTime = now
			}
			cs[i].Status = s
			cs[i].Reason = reason
			return cs
		}
	}
	return append(cs, corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: now})
}

// equalStatus compares what the simulator writes, so that an unchanged pod is not written again
// (each write would wake every watcher).
func equalStatus(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || a.HostIP != b.HostIP || (a.StartTime == nil) != (b.StartTime == nil) {
		return false
	}
	if len(a.Conditions) != len(b.Conditions) || len(a.ContainerStatuses) != len(b.ContainerStatuses) ||
		len(a.InitContainerStatuses) != len(b.InitContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason {
			return false
		}
	}
	same := func(x, y []corev1.ContainerStatus) bool {
		for i := range x {
			p, q := x[i], y[i]
			if p.Name != q.Name || p.Image != q.Image || p.ImageID != q.ImageID || p.Ready != q.Ready ||
				p.RestartCount != q.RestartCount || p.ContainerID != q.ContainerID ||
				stateName(p.State) != stateName(q.State) {
				return false
			}
		}
		return true
	}
	return same(a.ContainerStatuses, b.ContainerStatuses) && same(a.InitContainerStatuses, b.InitContainerStatuses)
}

func stateName(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return "waiting:" + s.Waiting.Reason
	case s.Terminated != nil:
		return fmt.Sprintf("terminated:%d", s.Terminated.ExitCode)
	}
	return ""
}
