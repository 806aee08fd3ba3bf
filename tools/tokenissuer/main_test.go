package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, key crypto.Signer) ([]byte, []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func newTestIssuer(t *testing.T, key crypto.Signer) (*issuer, *x509.CertPool) {
	t.Helper()
	keyPEM, certPEM := selfSigned(t, key)
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	is, err := newIssuerFromPEM(config{
		Issuer: "iss", Service: "svc", User: "tester", PasswordFile: pw,
		TTL: 300 * time.Second, PublicPrefix: "public/",
	}, keyPEM, certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		t.Fatal("bad cert PEM")
	}
	return is, roots
}

// verify does what distribution's token.Verify does with an x5c header: the leaf must chain to
// the rootcertbundle, and the signature must verify with the leaf's key.
func verify(t *testing.T, raw string, roots *x509.CertPool) (header, claimSet) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("want 3 parts, got %d", len(parts))
	}
	var h header
	var c claimSet
	for i, v := range []interface{}{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.X5c) != 1 {
		t.Fatalf("want a one-certificate x5c, got %d", len(h.X5c))
	}
	der, err := base64.StdEncoding.DecodeString(h.X5c[0])
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("chain: %v", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if h.SigningAlg != "RS256" {
			t.Fatalf("alg %q", h.SigningAlg)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("signature: %v", err)
		}
	case *ecdsa.PublicKey:
		if h.SigningAlg != "ES256" || len(sig) != 64 {
			t.Fatalf("alg %q, signature length %d", h.SigningAlg, len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k, digest[:], r, s) {
			t.Fatal("signature does not verify")
		}
	}
	return h, c
}

func request(t *testing.T, is *issuer, query string, user, pass string) (*httptest.ResponseRecorder, tokenResponse) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/token?"+query, nil)
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	is.routes().ServeHTTP(rec, req)
	var tr tokenResponse
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
			t.Fatal(err)
		}
	}
	return rec, tr
}

func TestSignedTokensVerifyLikeDistribution(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"rsa": rsaKey, "ecdsa": ecKey} {
		t.Run(name, func(t *testing.T) {
			is, roots := newTestIssuer(t, key)
			fixed := time.Unix(1700000000, 0)
			is.now = func() time.Time { return fixed }
			rec, tr := request(t, is, "service=svc&scope=repository:demo/web:pull,push", "tester", "s3cret")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn != 300 || tr.IssuedAt != "2023-11-14T22:13:20Z" {
				t.Fatalf("response %+v", tr)
			}
			h, c := verify(t, tr.Token, roots)
			if h.Type != "JWT" || h.KeyID == "" || len(strings.Split(h.KeyID, ":")) != 12 {
				t.Fatalf("header %+v", h)
			}
			if c.Issuer != "iss" || c.Audience != "svc" || c.Subject != "tester" ||
				c.IssuedAt != fixed.Unix() || c.NotBefore != fixed.Unix() || c.Expiration != fixed.Unix()+300 || c.JWTID == "" {
				t.Fatalf("claims %+v", c)
			}
			want := []*resourceActions{{Type: "repository", Name: "demo/web", Actions: []string{"pull", "push"}}}
			if !reflect.DeepEqual(c.Access, want) {
				t.Fatalf("access %s", describe(c.Access))
			}
		})
	}
}

func TestGrants(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is, roots := newTestIssuer(t, key)
	cases := []struct {
		name, query, user, pass string
		status                  int
		access                  string
	}{
		{"anonymous public pull", "service=svc&scope=repository:public/web:pull,push", "", "", 200, "[repository:public/web:pull]"},
		{"anonymous private", "service=svc&scope=repository:demo/web:pull", "", "", 200, "[]"},
		{"anonymous catalog", "service=svc&scope=registry:catalog:*", "", "", 200, "[]"},
		{"login without scope", "service=svc&offline_token=true&client_id=docker", "tester", "s3cret", 200, "[]"},
		{"several scopes", "service=svc&scope=repository:demo/web:pull&scope=repository:public/web:pull,push", "tester", "s3cret", 200,
			"[repository:demo/web:pull repository:public/web:pull,push]"},
		{"space separated scopes", "service=svc&scope=" + url.QueryEscape("repository:a:pull repository:b:push"), "tester", "s3cret", 200,
			"[repository:a:pull repository:b:push]"},
		{"registry with port in name", "service=svc&scope=repository:localhost:5000/x:pull", "tester", "s3cret", 200, "[repository:localhost:5000/x:pull]"},
		{"catalog", "service=svc&scope=registry:catalog:*", "tester", "s3cret", 200, "[registry:catalog:*]"},
		{"unknown action dropped", "service=svc&scope=repository:a:pull,frobnicate", "tester", "s3cret", 200, "[repository:a:pull]"},
		{"wrong password", "service=svc&scope=repository:demo/web:pull", "tester", "nope", 401, ""},
		{"wrong user", "service=svc&scope=repository:demo/web:pull", "root", "s3cret", 401, ""},
		{"wrong service", "service=other&scope=repository:demo/web:pull", "tester", "s3cret", 400, ""},
		{"malformed scope", "service=svc&scope=repository", "tester", "s3cret", 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, tr := request(t, is, tc.query, tc.user, tc.pass)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("401 without a Basic challenge")
			}
			if tc.status != http.StatusOK {
				return
			}
			_, c := verify(t, tr.Token, roots)
			if got := describe(c.Access); got != tc.access {
				t.Fatalf("access %s, want %s", got, tc.access)
			}
			wantSub := tc.user
			if c.Subject != wantSub {
				t.Fatalf("sub %q, want %q", c.Subject, wantSub)
			}
		})
	}
}

func TestPostPasswordGrant(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is, roots := newTestIssuer(t, key)
	form := url.Values{"grant_type": {"password"}, "username": {"tester"}, "password": {"s3cret"},
		"service": {"svc"}, "scope": {"repository:demo/web:pull"}, "client_id": {"docker"}}
	req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	is.routes().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		t.Fatal(err)
	}
	if _, c := verify(t, tr.Token, roots); describe(c.Access) != "[repository:demo/web:pull]" {
		t.Fatalf("access %s", describe(c.Access))
	}

	form.Set("grant_type", "refresh_token")
	req = httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec = httptest.NewRecorder()
	is.routes().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("refresh_token grant: status %d", rec.Code)
	}
}

func TestLibtrustKeyIDFormat(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := libtrustKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	groups := strings.Split(kid, ":")
	if len(groups) != 12 {
		t.Fatalf("kid %q: %d groups", kid, len(groups))
	}
	for _, g := range groups {
		if len(g) != 4 || strings.Trim(g, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
			t.Fatalf("kid %q: bad group %q", kid, g)
		}
	}
}

func TestRejectsMismatchedCertificate(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyPEM, _ := selfSigned(t, k1)
	_, certPEM := selfSigned(t, k2)
	if _, err := newIssuerFromPEM(config{}, keyPEM, certPEM); err == nil {
		t.Fatal("accepted a certificate for another key")
	}
}
