// Command failregistry is a container registry that is always broken: every /v2/ request is
// answered 500 with a distribution-style error body (and /healthz 200, so that dev-env can tell
// it runs). scripts/dev-env starts it on loopback for the "unrelated containers pointing at a
// broken registry" that tests must never touch or trip over.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5009", "address to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v2") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNKNOWN","message":"failregistry: always broken"}]}`))
	})
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
	log.Printf("failregistry: answering 500 on http://%s/v2/", *listen)
	log.Fatal(srv.ListenAndServe())
}
