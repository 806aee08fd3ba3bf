// Command constraintvectors records how github.com/Masterminds/semver/v3 (the library Helm
// uses for chart version ranges) judges constraint/version pairs, so that the Rust port in
// crates/core/src/constraint.rs can be checked against the real thing.
//
// It is run by hand (see README.md); nothing in the Rust build depends on Go.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/Masterminds/semver/v3"
)

const modulePath = "github.com/Masterminds/semver/v3"

type vector struct {
	Constraint      string `json:"constraint"`
	Version         string `json:"version"`
	ConstraintValid bool   `json:"constraint_valid"`
	VersionValid    bool   `json:"version_valid"`
	// Satisfies is null when either side failed to parse.
	Satisfies *bool `json:"satisfies"`
}

// unescape decodes the small escape set the inputs file uses so that tabs, newlines and
// other control characters can appear inside a field: \\ \t \n \r \v \f.
func unescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i >= len(s) {
			return "", fmt.Errorf("dangling backslash in %q", s)
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'v':
			b.WriteByte('\v')
		case 'f':
			b.WriteByte('\f')
		default:
			return "", fmt.Errorf("unknown escape \\%c in %q", s[i], s)
		}
	}
	return b.String(), nil
}

func libraryVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == modulePath {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

func main() {
	in := flag.String("in", "../../crates/core/tests/data/constraint_inputs.txt", "inputs: CONSTRAINT<TAB>VERSION per line")
	out := flag.String("out", "../../crates/core/tests/data/constraint_vectors.json", "where to write the vectors")
	flag.Parse()

	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()

	var cases []vector
	seen := map[[2]string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 2 {
			fmt.Fprintf(os.Stderr, "%s:%d: want CONSTRAINT<TAB>VERSION, got %d fields\n", *in, lineNo, len(fields))
			os.Exit(1)
		}
		c, err1 := unescape(fields[0])
		v, err2 := unescape(fields[1])
		if err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "%s:%d: %v %v\n", *in, lineNo, err1, err2)
			os.Exit(1)
		}
		key := [2]string{c, v}
		if seen[key] {
			continue
		}
		seen[key] = true

		vec := vector{Constraint: c, Version: v}
		cons, cerr := semver.NewConstraint(c)
		ver, verr := semver.NewVersion(v)
		vec.ConstraintValid = cerr == nil
		vec.VersionValid = verr == nil
		if cerr == nil && verr == nil {
			ok := cons.Check(ver)
			vec.Satisfies = &ok
		}
		cases = append(cases, vec)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	// One case per line keeps diffs of regenerated vectors readable.
	var buf bytes.Buffer
	header, _ := json.Marshal(libraryVersion())
	fmt.Fprintf(&buf, "{\"library_version\": %s,\n\"cases\": [\n", header)
	for i, vec := range cases {
		var one bytes.Buffer
		enc := json.NewEncoder(&one)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(vec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		buf.Write(bytes.TrimRight(one.Bytes(), "\n"))
		if i < len(cases)-1 {
			buf.WriteString(",")
		}
		buf.WriteString("\n")
	}
	buf.WriteString("]}\n")
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("wrote %d cases (%s %s) to %s\n", len(cases), modulePath, libraryVersion(), *out)
}
