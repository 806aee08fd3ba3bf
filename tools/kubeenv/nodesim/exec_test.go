package main

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func execPod() *corev1.Pod {
	p := pod("127.0.0.1:5001/demo/web:1.1.0", corev1.RestartPolicyAlways)
	p.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "PORT", Value: "8080"},
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "t"}}},
	}
	return p
}

func TestDockerArgsRunTheImageWithTheCommand(t *testing.T) {
	p := execPod()
	got, err := DockerArgs(p, p.Spec.Containers[0].Name, []string{"sh", "-c", "echo $APP_VERSION"}, "x", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"run", "--rm", "--name", "x", "--network", "none", "--pull", "missing", "--quiet",
		"-e", "PORT=8080", "--entrypoint", "sh", "127.0.0.1:5001/demo/web:1.1.0", "-c", "echo $APP_VERSION"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestDockerArgsStdinAndErrors(t *testing.T) {
	p := execPod()
	got, err := DockerArgs(p, p.Spec.Containers[0].Name, []string{"cat"}, "x", true)
	if err != nil || got[9] != "-i" {
		t.Fatalf("stdin: %q %v", got, err)
	}
	if _, err := DockerArgs(p, "nope", []string{"true"}, "x", false); err == nil {
		t.Fatal("unknown container accepted")
	}
	if _, err := DockerArgs(p, p.Spec.Containers[0].Name, nil, "x", false); err == nil {
		t.Fatal("empty command accepted")
	}
}
