// Command chartserver serves a directory (a classic Helm chart repository: index.yaml and the
// chart archives) over plain HTTP behind HTTP basic auth, for scripts/kube-env. Test
// infrastructure only: it binds to a loopback address and refuses anything else.
//
// The password is read from a file, never from the command line (which any user can read in
// /proc), and is never logged.
package main

import (
	"crypto/subtle"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:5010", "listen address (loopback only)")
	dir := flag.String("dir", ".", "directory to serve")
	user := flag.String("user", "chartuser", "basic auth user")
	passFile := flag.String("password-file", "", "file whose first line is the basic auth password (required)")
	flag.Parse()

	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		log.Fatalf("-addr %q: %v", *addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Fatalf("-addr %q is not a loopback address", *addr)
	}
	raw, err := os.ReadFile(*passFile)
	if err != nil {
		log.Fatalf("-password-file: %v", err)
	}
	pass := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0])
	if pass == "" {
		log.Fatalf("-password-file %s: empty password", *passFile)
	}

	h := handler(*dir, *user, pass)
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving %s on http://%s (basic auth user %s)", *dir, *addr, *user)
	log.Fatal(srv.ListenAndServe())
}

// handler serves dir to requests that carry the user and password, and only GET and HEAD.
func handler(dir, user, pass string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="kube-env charts"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			log.Printf("%s %s 401", r.Method, r.URL.Path)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		log.Printf("%s %s", r.Method, r.URL.Path)
		files.ServeHTTP(w, r)
	})
}
