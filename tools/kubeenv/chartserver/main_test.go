package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestBasicAuthGuardsTheRepository(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.yaml"), []byte("apiVersion: v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler(dir, "chartuser", "s3cret"))
	defer srv.Close()

	get := func(method, user, pass string) (int, string, string) {
		req, err := http.NewRequest(method, srv.URL+"/index.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body)
	}

	if code, challenge, _ := get(http.MethodGet, "", ""); code != 401 || challenge == "" {
		t.Fatalf("no credentials: %d %q, want 401 with a Basic challenge", code, challenge)
	}
	if code, _, _ := get(http.MethodGet, "chartuser", "wrong"); code != 401 {
		t.Fatalf("wrong password: %d, want 401", code)
	}
	if code, _, _ := get(http.MethodGet, "other", "s3cret"); code != 401 {
		t.Fatalf("wrong user: %d, want 401", code)
	}
	if code, _, body := get(http.MethodGet, "chartuser", "s3cret"); code != 200 || body != "apiVersion: v1\n" {
		t.Fatalf("right credentials: %d %q", code, body)
	}
	if code, _, _ := get(http.MethodPut, "chartuser", "s3cret"); code != 405 {
		t.Fatalf("PUT: %d, want 405", code)
	}
}
