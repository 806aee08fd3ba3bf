// Command refvectors writes the golden vectors that pin safe-updater's image reference
// parser (crates/core/src/reference.rs) to Docker's own behaviour.
//
// It is run BY HAND, never by the build or by CI, and only when the input list changes
// or when the pinned github.com/distribution/reference version is bumped. The Rust
// tests read only the generated JSON, which is committed next to the inputs.
//
// Regenerate from this directory with:
//
//	go run . ../../crates/core/tests/data/reference_inputs.txt ../../crates/core/tests/data/reference_vectors.json
//
// (those two paths are also the defaults when no arguments are given).
//
// Input format: one reference per line. Blank lines and lines starting with '#' are
// ignored. A line that starts with '"' is a Go string literal (strconv.Unquote), so that
// the empty string, surrounding spaces and control characters can be expressed.
//
// For every input the tool records what reference.ParseNormalizedNamed (the function the
// docker CLI uses for user-typed image names) makes of it. "normalized" is String() of
// the parsed reference WITHOUT TagNameOnly; "with_default_tag" is String() after
// TagNameOnly; "familiar" is FamiliarName and "familiar_string" is FamiliarString.
package main

import (
	"bufio"
	// go-digest only knows algorithms whose hash packages are linked in. The docker CLI
	// links both, so we must too, or every sha256 digest would be "unsupported".
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

type vector struct {
	Input          string  `json:"input"`
	Valid          bool    `json:"valid"`
	Registry       *string `json:"registry"`
	Repository     *string `json:"repository"`
	Tag            *string `json:"tag"`
	Digest         *string `json:"digest"`
	Normalized     *string `json:"normalized"`
	Familiar       *string `json:"familiar"`
	FamiliarString *string `json:"familiar_string"`
	WithDefaultTag *string `json:"with_default_tag"`
	Error          *string `json:"error"`
}

func ptr(s string) *string { return &s }

func readInputs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	var inputs []string
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, `"`) {
			unq, err := strconv.Unquote(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: bad quoted input %s: %w", path, lineNo, line, err)
			}
			line = unq
		}
		if prev, dup := seen[line]; dup {
			return nil, fmt.Errorf("%s:%d: duplicate of line %d: %q", path, lineNo, prev, line)
		}
		seen[line] = lineNo
		inputs = append(inputs, line)
	}
	return inputs, sc.Err()
}

func makeVector(input string) vector {
	v := vector{Input: input}
	named, err := reference.ParseNormalizedNamed(input)
	if err != nil {
		v.Error = ptr(err.Error())
		return v
	}
	v.Valid = true
	v.Registry = ptr(reference.Domain(named))
	v.Repository = ptr(reference.Path(named))
	if t, ok := named.(reference.Tagged); ok {
		v.Tag = ptr(t.Tag())
	}
	if d, ok := named.(reference.Digested); ok {
		v.Digest = ptr(d.Digest().String())
	}
	v.Normalized = ptr(named.String())
	v.Familiar = ptr(reference.FamiliarName(named))
	v.FamiliarString = ptr(reference.FamiliarString(named))
	v.WithDefaultTag = ptr(reference.TagNameOnly(named).String())
	return v
}

func run(inPath, outPath string) error {
	inputs, err := readInputs(inPath)
	if err != nil {
		return err
	}
	vectors := make([]vector, 0, len(inputs))
	valid := 0
	for _, in := range inputs {
		v := makeVector(in)
		if v.Valid {
			valid++
		}
		vectors = append(vectors, v)
	}

	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(vectors); err != nil {
		return err
	}
	if err := os.WriteFile(outPath, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %d vectors (%d valid, %d invalid) to %s\n",
		len(vectors), valid, len(vectors)-valid, outPath)
	return nil
}

func main() {
	inPath := "../../crates/core/tests/data/reference_inputs.txt"
	outPath := "../../crates/core/tests/data/reference_vectors.json"
	switch len(os.Args) {
	case 1:
	case 3:
		inPath, outPath = os.Args[1], os.Args[2]
	default:
		fmt.Fprintln(os.Stderr, "usage: refvectors [INPUTS.txt OUTPUT.json]")
		os.Exit(2)
	}
	if err := run(inPath, outPath); err != nil {
		fmt.Fprintln(os.Stderr, "refvectors:", err)
		os.Exit(1)
	}
}
