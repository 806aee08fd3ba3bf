// Command tokenissuer is a small Docker registry token server for the local test environment
// that scripts/dev-env starts. It implements the token endpoint of the Docker registry token
// authentication spec, which the registry's `auth: token:` mode (distribution v2.8) sends clients
// to:
//
//	GET /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...]
//	    [Authorization: Basic base64(user:password)]
//	POST /token   (OAuth2 form: grant_type=password, username, password, service, scope)
//
// and answers {"token", "access_token", "expires_in", "issued_at"}.
//
// Who gets what:
//   - the configured user with the right password: every requested action (pull, push, delete,
//     *) on every repository, and registry:catalog:*;
//   - anonymous requests: pull only, and only for repositories under the public prefix
//     ("public/" by default); other requested scopes are left out of the token, so the registry
//     then answers 401 insufficient_scope, like Docker Hub does;
//   - wrong credentials: 401.
//
// The token is a JWT signed with RS256 (RSA key) or ES256 (P-256 key). Its header carries the
// signing certificate as a one-element `x5c` chain, which distribution verifies against the
// certificates in its `rootcertbundle` (the same self-signed certificate), and a `kid` in
// libtrust's key ID format for verifiers that look keys up by ID instead. Claims: iss (the
// registry's configured `issuer`), sub (user name, empty when anonymous), aud (the registry's
// configured `service`), exp, nbf, iat, jti and access.
//
// The password is read from a file on every request, so changing it needs no restart.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// config is what the command line sets.
type config struct {
	Listen       string
	Issuer       string
	Service      string
	User         string
	PasswordFile string
	KeyFile      string
	CertFile     string
	TTL          time.Duration
	PublicPrefix string
}

// resourceActions is one entry of the token's "access" claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type claimSet struct {
	Issuer     string             `json:"iss"`
	Subject    string             `json:"sub"`
	Audience   string             `json:"aud"`
	Expiration int64              `json:"exp"`
	NotBefore  int64              `json:"nbf"`
	IssuedAt   int64              `json:"iat"`
	JWTID      string             `json:"jti"`
	Access     []*resourceActions `json:"access"`
}

type header struct {
	Type       string   `json:"typ"`
	SigningAlg string   `json:"alg"`
	KeyID      string   `json:"kid,omitempty"`
	X5c        []string `json:"x5c,omitempty"`
}

// tokenResponse is the body of a successful /token answer.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// issuer signs tokens and serves the token endpoint.
type issuer struct {
	cfg    config
	signer crypto.Signer
	alg    string
	x5c    []string
	kid    string
	now    func() time.Time
}

func main() {
	var cfg config
	flag.StringVar(&cfg.Listen, "listen", "127.0.0.1:5004", "address to listen on")
	flag.StringVar(&cfg.Issuer, "issuer", "safe-updater-dev-issuer", "iss claim; must equal the registry's auth.token.issuer")
	flag.StringVar(&cfg.Service, "service", "safe-updater-dev-registry", "aud claim; must equal the registry's auth.token.service")
	flag.StringVar(&cfg.User, "user", "tester", "the one user that may authenticate")
	flag.StringVar(&cfg.PasswordFile, "password-file", "", "file holding that user's password (read on every request)")
	flag.StringVar(&cfg.KeyFile, "key", "", "PEM private key (RSA or P-256 ECDSA) that signs tokens")
	flag.StringVar(&cfg.CertFile, "cert", "", "PEM certificate of that key; the registry's rootcertbundle must contain it")
	flag.DurationVar(&cfg.TTL, "ttl", 300*time.Second, "token lifetime")
	flag.StringVar(&cfg.PublicPrefix, "public-prefix", "public/", "repositories anonymous users may pull")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("tokenissuer: ")

	if cfg.PasswordFile == "" || cfg.KeyFile == "" || cfg.CertFile == "" {
		log.Fatal("-password-file, -key and -cert are required")
	}
	iss, err := newIssuer(cfg)
	if err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: iss.routes(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		s := <-sigs
		log.Printf("got %s, shutting down", s)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		close(done)
	}()
	log.Printf("listening on %s (issuer %q, service %q, alg %s, kid %s)", ln.Addr(), cfg.Issuer, cfg.Service, iss.alg, iss.kid)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-done
}

// newIssuer loads the key and certificate and checks that they belong together.
func newIssuer(cfg config) (*issuer, error) {
	keyPEM, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(cfg.CertFile)
	if err != nil {
		return nil, err
	}
	return newIssuerFromPEM(cfg, keyPEM, certPEM)
}

func newIssuerFromPEM(cfg config, keyPEM, certPEM []byte) (*issuer, error) {
	signer, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, err
	}
	var chain []string
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		if leaf == nil {
			leaf = c
		}
		chain = append(chain, base64.StdEncoding.EncodeToString(block.Bytes))
	}
	if leaf == nil {
		return nil, errors.New("certificate file holds no CERTIFICATE block")
	}
	if !publicKeysEqual(leaf.PublicKey, signer.Public()) {
		return nil, errors.New("the certificate is not for the private key")
	}
	alg, err := algorithmFor(signer)
	if err != nil {
		return nil, err
	}
	kid, err := libtrustKeyID(signer.Public())
	if err != nil {
		return nil, err
	}
	return &issuer{cfg: cfg, signer: signer, alg: alg, x5c: chain, kid: kid, now: time.Now}, nil
}

func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	for rest := keyPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("key file holds no private key")
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("private key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported private key type %T", k)
			}
			return s, nil
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func algorithmFor(s crypto.Signer) (string, error) {
	switch k := s.Public().(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("only P-256 ECDSA keys are supported (ES256)")
		}
		return "ES256", nil
	default:
		return "", fmt.Errorf("unsupported key type %T (use RSA or P-256 ECDSA)", k)
	}
}

// libtrustKeyID is the key ID format of github.com/docker/libtrust, which distribution v2.8
// uses to look up a `kid` among the keys of its rootcertbundle: SHA-256 of the DER
// SubjectPublicKeyInfo, first 240 bits, base32 without padding, in groups of four joined by ':'.
func libtrustKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(':')
		}
		end := i + 4
		if end > len(s) {
			end = len(s)
		}
		b.WriteString(s[i:end])
	}
	return b.String(), nil
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// sign returns the compact serialization of a JWT with the given claims.
func (is *issuer) sign(claims *claimSet) (string, error) {
	h, err := json.Marshal(header{Type: "JWT", SigningAlg: is.alg, KeyID: is.kid, X5c: is.x5c})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	payload := b64url(h) + "." + b64url(c)
	digest := sha256.Sum256([]byte(payload))
	var sig []byte
	switch k := is.signer.(type) {
	case *ecdsa.PrivateKey:
		// JOSE wants r || s, each left-padded to the curve size, not ASN.1.
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			return "", err
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	default:
		sig, err = is.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return "", err
		}
	}
	return payload + "." + b64url(sig), nil
}

// scope is one parsed `scope` parameter: type:name:actions. The name may itself hold colons
// (a repository on a registry with a port), so the type ends at the first colon and the actions
// start after the last one.
type scope struct {
	Type    string
	Name    string
	Actions []string
}

func parseScopes(raw []string) ([]scope, error) {
	var out []scope
	for _, r := range raw {
		for _, one := range strings.Fields(r) {
			first := strings.Index(one, ":")
			last := strings.LastIndex(one, ":")
			if first < 0 || first == last {
				return nil, fmt.Errorf("malformed scope %q (want type:name:actions)", one)
			}
			sc := scope{Type: one[:first], Name: one[first+1 : last]}
			for _, a := range strings.Split(one[last+1:], ",") {
				if a = strings.TrimSpace(a); a != "" {
					sc.Actions = append(sc.Actions, a)
				}
			}
			if sc.Type == "" || sc.Name == "" {
				return nil, fmt.Errorf("malformed scope %q (want type:name:actions)", one)
			}
			out = append(out, sc)
		}
	}
	return out, nil
}

// grant decides which of the requested actions the caller gets. user is "" for anonymous.
func (is *issuer) grant(user string, scopes []scope) []*resourceActions {
	type key struct{ typ, name string }
	granted := map[key]map[string]bool{}
	var order []key
	for _, sc := range scopes {
		k := key{sc.Type, sc.Name}
		for _, a := range sc.Actions {
			if !is.allowed(user, sc, a) {
				continue
			}
			if granted[k] == nil {
				granted[k] = map[string]bool{}
				order = append(order, k)
			}
			granted[k][a] = true
		}
	}
	out := []*resourceActions{}
	for _, k := range order {
		ra := &resourceActions{Type: k.typ, Name: k.name}
		for a := range granted[k] {
			ra.Actions = append(ra.Actions, a)
		}
		sort.Strings(ra.Actions)
		out = append(out, ra)
	}
	return out
}

func (is *issuer) allowed(user string, sc scope, action string) bool {
	switch sc.Type {
	case "repository":
		if user != "" {
			switch action {
			case "pull", "push", "delete", "*":
				return true
			}
			return false
		}
		return action == "pull" && strings.HasPrefix(sc.Name, is.cfg.PublicPrefix)
	case "registry":
		return user != "" && sc.Name == "catalog" && action == "*"
	}
	return false
}

func (is *issuer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/token", is.handleToken)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Errors []errorItem `json:"errors"`
}

type errorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="safe-updater-dev token issuer"`)
	}
	writeJSON(w, status, errorBody{Errors: []errorItem{{Code: code, Message: msg}}})
}

func (is *issuer) handleToken(w http.ResponseWriter, r *http.Request) {
	var (
		service, user, password string
		rawScopes               []string
		hasCreds                bool
	)
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		service = q.Get("service")
		rawScopes = q["scope"]
		user, password, hasCreds = r.BasicAuth()
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			fail(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		service = r.PostForm.Get("service")
		rawScopes = r.PostForm["scope"]
		switch gt := r.PostForm.Get("grant_type"); gt {
		case "password":
			user, password, hasCreds = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		default:
			fail(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q is not supported (use password, or GET with Basic auth)", gt))
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		fail(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET or POST")
		return
	}

	if service != "" && service != is.cfg.Service {
		fail(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("unknown service %q (this issuer serves %q)", service, is.cfg.Service))
		return
	}
	scopes, err := parseScopes(rawScopes)
	if err != nil {
		fail(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}

	subject := ""
	if hasCreds {
		ok, err := is.checkPassword(user, password)
		if err != nil {
			log.Printf("reading password file: %v", err)
			fail(w, http.StatusInternalServerError, "server_error", "cannot read the password file")
			return
		}
		if !ok {
			log.Printf("denied: bad credentials for user %q", user)
			fail(w, http.StatusUnauthorized, "unauthorized", "incorrect username or password")
			return
		}
		subject = user
	}

	now := is.now()
	access := is.grant(subject, scopes)
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	tok, err := is.sign(&claimSet{
		Issuer:     is.cfg.Issuer,
		Subject:    subject,
		Audience:   is.cfg.Service,
		Expiration: now.Add(is.cfg.TTL).Unix(),
		NotBefore:  now.Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      hex.EncodeToString(jti),
		Access:     access,
	})
	if err != nil {
		fail(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	who := subject
	if who == "" {
		who = "(anonymous)"
	}
	log.Printf("issued: user=%s requested=%q granted=%s", who, rawScopes, describe(access))
	writeJSON(w, http.StatusOK, tokenResponse{
		Token:       tok,
		AccessToken: tok,
		ExpiresIn:   int(is.cfg.TTL / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	})
}

func (is *issuer) checkPassword(user, password string) (bool, error) {
	raw, err := os.ReadFile(is.cfg.PasswordFile)
	if err != nil {
		return false, err
	}
	want := strings.TrimRight(string(raw), "\r\n")
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(is.cfg.User)) == 1
	passOK := subtle.ConstantTimeCompare([]byte(password), []byte(want)) == 1
	return userOK && passOK && want != "", nil
}

func describe(access []*resourceActions) string {
	if len(access) == 0 {
		return "[]"
	}
	parts := make([]string, 0, len(access))
	for _, a := range access {
		parts = append(parts, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
