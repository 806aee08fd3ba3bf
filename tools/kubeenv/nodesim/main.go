// Command nodesim is a simulated kubelet for scripts/kube-env: it registers one Ready node with
// capacity (so the scheduler places pods on it), keeps its Lease and status fresh, and moves every
// pod bound to it the way a kubelet would report it, without running any container:
//
//   - a pod starts Running with its containers ready (Ready honours readiness gates and a
//     readiness probe's initialDelaySeconds);
//   - a container whose image matches -bad-images (env KUBE_ENV_BAD_IMAGES, default `:1\.0\.2$`)
//     never becomes ready: CrashLoopBackOff with a rising restartCount, or, in a pod with
//     restartPolicy Never, it exits 1 and the pod fails;
//   - a pod that is not restarted (a Job's) completes after -job-run-time;
//   - a pod being deleted gracefully is deleted at once (grace period 0), so rollouts progress;
//   - exec (`kubectl exec`) runs the command in a throwaway Docker container of the pod's image
//     (exec.go), through a kubelet endpoint on -host-ip:-kubelet-port.
//
// Test infrastructure only. It must never reach anything but the apiserver, the local Docker engine
// (exec) and, to report real image digests, registries on loopback addresses.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

const defaultBad = `:1\.0\.2$`

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of a user allowed to manage nodes and pods")
	nodeName := flag.String("node", "kube-env-node", "name of the simulated node")
	hostIP := flag.String("host-ip", "127.0.0.1", "the node's InternalIP, where its kubelet endpoint (exec) listens")
	kubeletPort := flag.Int("kubelet-port", 10250, "port of the kubelet endpoint (exec); 0: none")
	docker := flag.String("docker", "docker", "docker CLI that runs exec commands in throwaway containers of the pod's image")
	bad := flag.String("bad-images", envOr("KUBE_ENV_BAD_IMAGES", defaultBad), "regular expression: images that crash")
	crashEvery := flag.Duration("crash-every", 10*time.Second, "time between simulated crashes of a bad container")
	jobRun := flag.Duration("job-run-time", 2*time.Second, "how long a Job's container runs before it completes")
	cpu := flag.String("cpu", "32", "node CPU capacity")
	mem := flag.String("memory", "128Gi", "node memory capacity")
	pods := flag.String("pods", "250", "node pod capacity")
	kubeletVersion := flag.String("kubelet-version", "v1.35.4", "version the node reports")
	klog.InitFlags(nil)
	flag.Parse()

	re, err := regexp.Compile(*bad)
	if err != nil {
		klog.Exitf("-bad-images %q: %v", *bad, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Exitf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "kube-env-nodesim"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Exitf("client: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	n := &node{client: client, name: *nodeName, hostIP: *hostIP, port: int32(*kubeletPort), version: *kubeletVersion,
		capacity: corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse(*cpu),
			corev1.ResourceMemory:           resource.MustParse(*mem),
			corev1.ResourcePods:             resource.MustParse(*pods),
			corev1.ResourceEphemeralStorage: resource.MustParse("500Gi"),
		}}
	for {
		if err := n.register(ctx); err != nil {
			klog.Errorf("registering node %s: %v (retrying)", n.name, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
				continue
			}
		}
		break
	}
	klog.Infof("node %s registered; bad images match %q", n.name, re.String())
	go n.heartbeat(ctx)

	s := &sim{client: client, settings: Settings{BadImages: re, CrashEvery: *crashEvery, JobRunTime: *jobRun, HostIP: *hostIP},
		ids: newDigests(), queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.name).String()
	}))
	podInformer := factory.Core().V1().Pods()
	s.lister = podInformer.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			s.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		klog.Exitf("pod informer: %v", err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	if *kubeletPort != 0 {
		addr := net.JoinHostPort(*hostIP, fmt.Sprint(*kubeletPort))
		go func() {
			if err := serveKubelet(ctx, addr, s.lister, *docker); err != nil {
				klog.Exitf("kubelet endpoint %s: %v", addr, err)
			}
		}()
	}
	for i := 0; i < 4; i++ {
		go s.work(ctx)
	}
	<-ctx.Done()
	s.queue.ShutDown()
	klog.Infof("stopping")
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// ---------------------------------------------------------------------------------------------
// The node

type node struct {
	client   kubernetes.Interface
	name     string
	hostIP   string
	port     int32
	version  string
	capacity corev1.ResourceList
}

func (n *node) status(now metav1.Time) corev1.NodeStatus {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    n.capacity,
		Allocatable: n.capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "simulated"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "simulated"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "simulated"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kube-env nodesim is posting ready status"),
		},
		// No Hostname address: the apiserver prefers it (default --kubelet-preferred-address-types)
		// to reach the kubelet endpoint, and the node's name does not resolve.
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.hostIP}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: n.port}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: "kube-env-" + n.name, SystemUUID: "kube-env-" + n.name, BootID: "kube-env",
			KernelVersion: "simulated", OSImage: "kube-env nodesim", ContainerRuntimeVersion: "containerd://simulated",
			KubeletVersion: n.version, OperatingSystem: "linux", Architecture: "amd64",
		},
	}
}

func (n *node) register(ctx context.Context) error {
	nodes := n.client.CoreV1().Nodes()
	want := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{
		"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
		"node.kubernetes.io/instance-type": "kube-env-sim",
	}}}
	cur, err := nodes.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cur, err = nodes.Create(ctx, want, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	cur.Status = n.status(metav1.Now())
	if _, err := nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return n.renewLease(ctx)
}

func (n *node) renewLease(ctx context.Context) error {
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(40)
	cur, err := leases.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.name, LeaseDurationSeconds: &dur, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur.Spec.HolderIdentity, cur.Spec.LeaseDurationSeconds, cur.Spec.RenewTime = &n.name, &dur, &now
	_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// heartbeat keeps the node Ready for the node lifecycle controller: the Lease every 10 s and the
// status (heartbeat times) every 30 s, as a kubelet does.
func (n *node) heartbeat(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	i := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i++
		if err := n.renewLease(ctx); err != nil {
			klog.Warningf("renewing lease: %v", err)
		}
		if i%3 != 0 {
			continue
		}
		cur, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			klog.Warningf("node status: %v", err)
			continue
		}
		now := metav1.Now()
		st := n.status(now)
		// Keep transition times: only the heartbeat moves.
		for i := range st.Conditions {
			for _, c := range cur.Status.Conditions {
				if c.Type == st.Conditions[i].Type && c.Status == st.Conditions[i].Status {
					st.Conditions[i].LastTransitionTime = c.LastTransitionTime
				}
			}
		}
		st.Images = cur.Status.Images
		cur.Status = st
		if _, err := n.client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			klog.Warningf("node status: %v", err)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// The pods

type sim struct {
	client   kubernetes.Interface
	settings Settings
	ids      *digests
	queue    workqueue.TypedRateLimitingInterface[string]
	lister   corelisters.PodLister
}

func (s *sim) work(ctx context.Context) {
	for {
		key, quit := s.queue.Get()
		if quit {
			return
		}
		again, err := s.sync(ctx, key)
		switch {
		case err != nil:
			klog.V(2).Infof("pod %s: %v (will retry)", key, err)
			s.queue.AddRateLimited(key)
		default:
			s.queue.Forget(key)
			if again > 0 {
				s.queue.AddAfter(key, again)
			}
		}
		s.queue.Done(key)
	}
}

func (s *sim) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	pod, err := s.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	out := Decide(pod, s.settings, s.ids.imageID, time.Now())
	if out.Delete {
		zero := int64(0)
		uid := pod.UID
		err := s.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return 0, err
		}
		return 0, nil
	}
	if out.Status != nil {
		p := pod.DeepCopy()
		p.Status = *out.Status
		if _, err := s.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return 0, nil
			}
			return 0, err
		}
		klog.V(1).Infof("pod %s: %s", key, summary(out.Status))
	}
	return out.Again, nil
}

func summary(st *corev1.PodStatus) string {
	var b strings.Builder
	b.WriteString(string(st.Phase))
	for _, c := range st.ContainerStatuses {
		fmt.Fprintf(&b, " %s=%s/ready=%v/restarts=%d", c.Name, stateName(c.State), c.Ready, c.RestartCount)
	}
	return b.String()
}

// ---------------------------------------------------------------------------------------------
// Image digests, as a runtime would report them in imageID, read from registries on loopback
// only (the kube-env images live in scripts/dev-env's registries). Anything else: unknown ("").

type digests struct {
	mu    sync.Mutex
	seen  map[string]cachedDigest
	httpc *http.Client
}

type cachedDigest struct {
	id string
	at time.Time
}

func newDigests() *digests {
	return &digests{seen: map[string]cachedDigest{}, httpc: &http.Client{Timeout: 3 * time.Second}}
}

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

func (d *digests) imageID(image string) string {
	d.mu.Lock()
	c, ok := d.seen[image]
	d.mu.Unlock()
	if ok && time.Since(c.at) < 30*time.Second {
		return c.id
	}
	id := d.resolve(image)
	d.mu.Lock()
	d.seen[image] = cachedDigest{id: id, at: time.Now()}
	d.mu.Unlock()
	return id
}

func (d *digests) resolve(image string) string {
	repo, ref := image, "latest"
	if at := strings.Index(image, "@"); at >= 0 {
		return image
	}
	slash := strings.Index(image, "/")
	if slash < 0 {
		return ""
	}
	host := image[:slash]
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if ip := net.ParseIP(h); !(h == "localhost" || ip != nil && ip.IsLoopback()) {
		return ""
	}
	if colon := strings.LastIndex(image, ":"); colon > slash {
		repo, ref = image[:colon], image[colon+1:]
	}
	req, err := http.NewRequest(http.MethodHead, fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo[slash+1:], ref), nil)
	if err != nil {
		return ""
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := d.httpc.Do(req)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	dg := resp.Header.Get("Docker-Content-Digest")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(dg, "sha256:") {
		return ""
	}
	return repo + "@" + dg
}
