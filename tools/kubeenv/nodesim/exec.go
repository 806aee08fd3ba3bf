package main

// The kubelet's exec endpoint, so `kubectl exec` (and kube-rs's `Api::<Pod>::exec`) work through
// the real kube-apiserver: the apiserver proxies `pods/exec` to https://<InternalIP>:<kubelet
// port>/exec/<namespace>/<pod>/<container>?command=... (a WebSocket request from the client is
// translated to SPDY by the apiserver). The streaming protocol is the kubelet's own
// (k8s.io/kubelet/pkg/cri/streaming/remotecommand), so exit codes travel in the status channel
// exactly as from a real node.
//
// No container runs on this node, so a command runs in a throwaway Docker container of the pod
// container's image (`docker run --rm --network none --entrypoint <cmd[0]> <image> <args>`), with
// the container's literal environment values: a check sees the real image's files and
// environment, not the state of a running process (nothing listens inside it).
//
// It must never run anything but `docker run` of an image a pod on this node names; it listens
// on loopback only. The apiserver does not verify a kubelet's serving certificate unless
// --kubelet-certificate-authority is set (kube-env does not set it), so a self-signed one is made
// at start.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"
	streaming "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// maxExecTime bounds one command: a throwaway container never outlives it.
const maxExecTime = 5 * time.Minute

// DockerArgs is the `docker` command line that runs cmd in a throwaway container of the pod
// container's image. Pure, so it is tested without Docker.
func DockerArgs(pod *corev1.Pod, container string, cmd []string, name string, stdin bool) ([]string, error) {
	if len(cmd) == 0 {
		return nil, errors.New("no command given")
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("container %q not found in pod %s/%s", container, pod.Namespace, pod.Name)
	}
	args := []string{"run", "--rm", "--name", name, "--network", "none", "--pull", "missing", "--quiet"}
	if stdin {
		args = append(args, "-i")
	}
	for _, e := range c.Env {
		// Values from Secrets, ConfigMaps or the downward API are not resolved here.
		if e.ValueFrom == nil {
			args = append(args, "-e", e.Name+"="+e.Value)
		}
	}
	if c.WorkingDir != "" {
		args = append(args, "-w", c.WorkingDir)
	}
	args = append(args, "--entrypoint", cmd[0], c.Image)
	return append(args, cmd[1:]...), nil
}

type execServer struct {
	lister corelisters.PodLister
	docker string
}

type podExecutor struct {
	s   *execServer
	pod *corev1.Pod
}

func (e podExecutor) ExecInContainer(ctx context.Context, _ string, _ types.UID, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if tty {
		return errors.New("nodesim: exec with a TTY is not supported")
	}
	buf := make([]byte, 6)
	if _, err := rand.Read(buf); err != nil {
		return err
	}
	name := "nodesim-exec-" + hex.EncodeToString(buf)
	args, err := DockerArgs(e.pod, container, cmd, name, in != nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, maxExecTime)
	defer cancel()
	c := exec.Command(e.s.docker, args...)
	if in != nil {
		c.Stdin = in
	}
	if out != nil {
		c.Stdout = out
	}
	if errw != nil {
		c.Stderr = errw
	}
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Killing the docker CLI leaves the container running: remove it by name.
		_ = exec.Command(e.s.docker, "rm", "-f", name).Run()
		err = <-done
		if err == nil {
			err = ctx.Err()
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		// `docker run` exits 125-127 for its own failures (no image, no such command); those
		// are reported as the command's exit code too, as containerd would for a missing binary.
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

func (s *execServer) serve(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	pod, err := s.lister.Pods(ns).Get(name)
	if err != nil {
		http.Error(w, fmt.Sprintf("pod %s/%s: %v", ns, name, err), http.StatusNotFound)
		return
	}
	opts, err := streaming.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	klog.V(1).Infof("exec in %s/%s/%s: %q", ns, name, container, cmd)
	streaming.ServeExec(w, r, podExecutor{s: s, pod: pod}, name, pod.UID, container, cmd, opts,
		4*time.Hour, 30*time.Second, remotecommandconsts.SupportedStreamingProtocols)
}

// serveKubelet listens on addr (TLS, self-signed) until ctx ends.
func serveKubelet(ctx context.Context, addr string, lister corelisters.PodLister, docker string) error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	s := &execServer{lister: lister, docker: docker}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", s.serve)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", s.serve)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	klog.Infof("kubelet endpoint (exec) on https://%s", addr)
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "kube-env-nodesim"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
