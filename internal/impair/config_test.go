package impair

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		spec string
		want Config
	}{
		{"", Config{}},
		{"   ", Config{}},
		{"loss 1% delay 20ms reorder 5%", Config{Loss: 0.01, Delay: 20 * time.Millisecond, Reorder: 0.05}},
		{"delay 10ms 2ms", Config{Delay: 10 * time.Millisecond, Jitter: 2 * time.Millisecond}},
		{"duplicate 1%", Config{Duplicate: 0.01}},
		{"limit 10000", Config{Limit: 10000}},
		{"limit 0", Config{}},
		{"loss random 0.5%", Config{Loss: 0.005}},
		{"drop 100%", Config{Loss: 1}},
		{"loss 0.25", Config{Loss: 0.25}}, // a bare fraction, as tc reads it
		{"loss 0%", Config{}},
		{"latency 1s", Config{Delay: time.Second}},
		{"delay 1.5ms", Config{Delay: 1500 * time.Microsecond}},
		{"delay .5sec", Config{Delay: 500 * time.Millisecond}},
		{"delay 250", Config{Delay: 250 * time.Microsecond}}, // bare number: µs
		{"delay 250usec 10nsecs", Config{Delay: 250 * time.Microsecond, Jitter: 10}},
		{"delay 7ns", Config{Delay: 7}},
		{"delay 0 1ms", Config{Jitter: time.Millisecond}},
		{
			"reorder 25% delay 10ms 5ms loss 3% duplicate 2% limit 50",
			Config{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.03, Reorder: 0.25, Duplicate: 0.02, Limit: 50},
		},
	}
	for _, tt := range tests {
		got, err := Parse(tt.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.spec, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.spec, got, tt.want)
		}
		// Round trip through String.
		back, err := Parse(got.String())
		if err != nil || back != got {
			t.Errorf("Parse(%q.String() = %q) = %+v, %v; want %+v", tt.spec, got.String(), back, err, got)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		spec string
		want error
	}{
		{"loss", ErrSyntax},
		{"loss random", ErrSyntax},
		{"loss x%", ErrSyntax},
		{"loss %", ErrSyntax},
		{"loss 1%%", ErrSyntax},
		{"loss NaN", ErrSyntax},
		{"loss inf%", ErrSyntax},
		{"loss 101%", ErrRange},
		{"loss -1%", ErrRange},
		{"loss 1.5", ErrRange},
		{"loss 1% 25%", ErrUnsupported},
		{"loss state 1% 2%", ErrUnsupported},
		{"loss gemodel 1%", ErrUnsupported},
		{"delay", ErrSyntax},
		{"delay ms", ErrSyntax},
		{"delay 10 ms", ErrSyntax}, // "ms" is not a keyword
		{"delay 10xs", ErrSyntax},
		{"delay 10ms 2ms 25%", ErrUnsupported},
		{"delay 10ms 2ms distribution normal", ErrUnsupported},
		{"delay -5ms", ErrRange},
		{"delay 10ms -1ms", ErrRange},
		{"delay 3601s", ErrRange},
		{"delay 1e3ms", ErrSyntax},
		{"delay 10ms delay 5ms", ErrSyntax},
		{"delay 1ms latency 1ms", ErrSyntax},
		{"reorder 5%", ErrRange}, // needs a delay
		{"delay 0 1ms reorder 5%", ErrRange},
		{"delay 10ms reorder 5% gap 5", ErrUnsupported},
		{"delay 10ms reorder 5% 50%", ErrUnsupported},
		{"duplicate", ErrSyntax},
		{"duplicate 2", ErrRange},
		{"limit", ErrSyntax},
		{"limit -1", ErrSyntax},
		{"limit 1.5", ErrSyntax},
		{"limit 99999999999", ErrSyntax},
		{"limit 2000000", ErrRange},
		{"corrupt 1%", ErrUnsupported},
		{"rate 1mbit", ErrUnsupported},
		{"slot 1ms", ErrUnsupported},
		{"netem loss 1%", ErrSyntax},
		{"loss 1% bogus", ErrSyntax},
		{"10ms", ErrSyntax},
	}
	for _, tt := range tests {
		c, err := Parse(tt.spec)
		if !errors.Is(err, tt.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %v", tt.spec, c, err, tt.want)
			continue
		}
		if c != (Config{}) {
			t.Errorf("Parse(%q) returned %+v with its error", tt.spec, c)
		}
		// The message adds what is wrong to the sentinel's text.
		if len(err.Error()) <= len(tt.want.Error())+2 {
			t.Errorf("Parse(%q): error %q says too little", tt.spec, err)
		}
	}
}

// TestParseWordPrefixes cuts valid specifications after every word: each
// prefix parses or fails with one of the sentinel errors, never anything
// else.
func TestParseWordPrefixes(t *testing.T) {
	for _, spec := range []string{
		"reorder 25% delay 10ms 5ms loss random 3% duplicate 2% limit 50",
		"delay 1s 10ms loss 0.5 limit 7",
	} {
		f := strings.Fields(spec)
		for n := range len(f) + 1 {
			p := strings.Join(f[:n], " ")
			_, err := Parse(p)
			if err != nil && !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrRange) && !errors.Is(err, ErrUnsupported) {
				t.Errorf("Parse(%q): %v is no sentinel error", p, err)
			}
		}
		if _, err := Parse(spec); err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
		}
	}
}

func TestConfigString(t *testing.T) {
	tests := []struct {
		c    Config
		want string
	}{
		{Config{}, ""},
		{Config{Loss: 0.01, Delay: 10 * time.Millisecond, Reorder: 0.05}, "delay 10ms loss 1% reorder 5%"},
		{Config{Jitter: time.Millisecond}, "delay 0s 1ms"},
		{Config{Delay: 1500 * time.Microsecond}, "delay 1500us"},
		{Config{Delay: 3}, "delay 3ns"},
		{Config{Duplicate: 1, Limit: 3}, "duplicate 100% limit 3"},
		{Config{Loss: 0.07}, "loss 7.000000000000001%"}, // 0.07*100 is not 7 in binary
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.c, got, tt.want)
		}
		back, err := Parse(tt.c.String())
		if err != nil || back != tt.c {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.c.String(), back, err, tt.c)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Loss: -0.1}, {Loss: 1.01}, {Reorder: 2, Delay: 1}, {Duplicate: -1},
		{Delay: -1}, {Jitter: -1}, {Delay: MaxDelay + 1}, {Jitter: MaxDelay + 1},
		{Limit: -1}, {Limit: MaxLimit + 1}, {Reorder: 0.5},
	}
	for _, c := range bad {
		if err := c.Validate(); !errors.Is(err, ErrRange) {
			t.Errorf("%+v.Validate() = %v, want ErrRange", c, err)
		}
	}
	var nan Config
	nan.Loss = nan.Loss / nan.Loss // NaN without a constant expression
	if err := nan.Validate(); !errors.Is(err, ErrRange) {
		t.Errorf("NaN loss: Validate() = %v, want ErrRange", err)
	}
	good := []Config{{}, {Loss: 1, Duplicate: 1, Reorder: 1, Delay: MaxDelay, Jitter: MaxDelay, Limit: MaxLimit}}
	for _, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v", c, err)
		}
	}
}

// FuzzParse checks that Parse never panics, that whatever it accepts is
// valid, and that String is its inverse on accepted configurations.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "loss 1% delay 20ms reorder 5%", "delay 10ms 2ms", "duplicate 1%",
		"limit 10000", "loss random 0.5", "delay .5sec 1us", "delay 1e3ms",
		"reorder 5% gap 3", "loss 7.000000000000001%", "delay 9223372036854775807ns",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		c, err := Parse(spec)
		if err != nil {
			if c != (Config{}) {
				t.Fatalf("Parse(%q) returned %+v with error %v", spec, c, err)
			}
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrRange) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Parse(%q): %v is no sentinel error", spec, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid %+v: %v", spec, c, err)
		}
		s := c.String()
		back, err := Parse(s)
		if err != nil || back != c {
			t.Fatalf("Parse(%q) = %+v; Parse(String() = %q) = %+v, %v", spec, c, s, back, err)
		}
		if s2 := back.String(); s2 != s {
			t.Fatalf("String not stable: %q then %q", s, s2)
		}
	})
}
