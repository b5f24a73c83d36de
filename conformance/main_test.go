package conformance

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var updateFlag = flag.Bool("update", false, "regenerate pcaps/testdata/kernel from a fresh namespace run (also MPTUND_UPDATE_FIXTURES=1)")

// updateFixtures reports whether the scenario test should rewrite the
// committed fixtures.
func updateFixtures() bool {
	return *updateFlag || os.Getenv("MPTUND_UPDATE_FIXTURES") == "1"
}

// fixtureDir is where the kernel captures are committed.
const fixtureDir = "../pcaps/testdata/kernel"

// binDir holds the programs the tests build; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "mptund-conformance-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

var (
	kpeerBin  builtBinary
	mptundBin builtBinary
)

// build compiles pkg (a package path relative to the module root) once per
// test binary and returns the executable's path.
func (b *builtBinary) build(t testing.TB, pkg, name string) string {
	t.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(binDir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = ".."
		b.out, b.err = cmd.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, b.err, b.out)
	}
	return b.path
}

// kpeer returns the path of the kernel peer program.
func kpeer(t testing.TB) string {
	return kpeerBin.build(t, "./conformance/internal/kpeer", "kpeer")
}

// mptund returns the path of the mptund command.
func mptund(t testing.TB) string {
	return mptundBin.build(t, "./cmd/mptund", "mptund")
}
