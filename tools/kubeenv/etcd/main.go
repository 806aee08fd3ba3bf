// Command etcd is etcd's server, built from the same go.etcd.io/etcd/server/v3 that
// k8s.io/kubernetes pins, so that scripts/kube-env needs no etcd package of a version the
// apiserver may not accept (Debian bookworm ships 3.4).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
