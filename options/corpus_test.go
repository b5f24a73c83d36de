package options

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz seed corpora from the test vectors")

// seedCorpora returns, per fuzz target, the seed inputs derived from the
// test tables, keyed by file name.
func seedCorpora() map[string]map[string][]byte {
	c := map[string]map[string][]byte{
		"FuzzParse": {}, "FuzzParseTCPOptions": {}, "FuzzLayout": {},
	}
	for _, v := range allVectors() {
		c["FuzzParse"]["valid-"+fileName(v.name)] = v.raw
	}
	for _, v := range allBadVectors() {
		c["FuzzParse"]["bad-"+fileName(v.name)] = v.raw
	}
	for _, tc := range tcpCases {
		c["FuzzParseTCPOptions"]["valid-"+fileName(tc.name)] = tc.in
	}
	for _, tc := range tcpErrCases {
		c["FuzzParseTCPOptions"]["bad-"+fileName(tc.name)] = tc.in
	}
	for _, tc := range layoutCases {
		c["FuzzParseTCPOptions"]["layout-"+fileName(tc.name)] = tc.want
		c["FuzzLayout"][fileName(tc.name)] = encodeFuzzLayout(tc.l)
	}
	return c
}

func fileName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
}

// corpusFile is the "go test fuzz v1" encoding of one []byte input.
func corpusFile(b []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
}

// TestFuzzCorpus checks that testdata/fuzz holds a seed file for every test
// vector (run with -update-corpus to regenerate after changing vectors).
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range seedCorpora() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, in := range seeds {
			path := filepath.Join(dir, name)
			want := corpusFile(in)
			if *updateCorpus {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s missing or stale (run go test -run TestFuzzCorpus -update-corpus)", path)
			}
		}
	}
}
