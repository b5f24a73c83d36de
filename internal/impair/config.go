package impair

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DefaultLimit is the delay-line capacity used when Config.Limit is zero;
// it is netem's default "limit".
const DefaultLimit = 1000

// MaxDelay bounds Config.Delay and Config.Jitter. Longer delays are almost
// certainly a unit mistake, and keeping them bounded keeps Delay+Jitter far
// from overflowing time.Duration.
const MaxDelay = time.Hour

// MaxLimit bounds Config.Limit (packets held in one delay line).
const MaxLimit = 1 << 20

// Errors returned by Parse and Config.Validate; the returned error wraps one
// of them and says which keyword or value is at fault.
var (
	// ErrSyntax: an unknown keyword, a missing or malformed value.
	ErrSyntax = errors.New("impair: syntax error")
	// ErrRange: a value outside its domain (probability outside [0, 1],
	// negative or overlong delay, limit out of range).
	ErrRange = errors.New("impair: value out of range")
	// ErrUnsupported: netem syntax that is understood but not implemented
	// (correlations, loss models, reorder gap, rate, slot, ...).
	ErrUnsupported = errors.New("impair: unsupported netem feature")
)

// Config impairs one direction of a link, with the semantics of Linux
// netem (tc-netem(8)) for the subset it has. The zero Config passes every
// packet through untouched and at once.
//
// For each packet, in this order:
//
//  1. Loss: with probability Loss the packet is dropped.
//  2. Duplicate: with probability Duplicate a second copy is made; each copy
//     then goes through step 3 on its own.
//  3. Delay: the copy is held for Delay plus a uniform jitter in
//     [-Jitter, +Jitter] (clamped at zero), except that with probability
//     Reorder it skips the delay and goes at once, ahead of the packets
//     being delayed (netem's "reorder" with its default gap of 1). Held
//     packets leave in order of their due time, so a Jitter larger than
//     the spacing of packets reorders them too, as in netem.
//
// At most Limit packets are held in the delay line (DefaultLimit if zero);
// a packet that would exceed it is dropped and counted as an overflow.
type Config struct {
	Delay, Jitter time.Duration
	// Loss, Reorder and Duplicate are probabilities in [0, 1].
	Loss, Reorder, Duplicate float64
	// Limit bounds the packets held in the delay line; zero selects
	// DefaultLimit.
	Limit int
}

// limit returns the effective delay-line capacity.
func (c Config) limit() int {
	if c.Limit == 0 {
		return DefaultLimit
	}
	return c.Limit
}

// Validate reports whether c is usable: probabilities in [0, 1], delays in
// [0, MaxDelay], Limit in [0, MaxLimit], and Reorder only together with a
// Delay (without one there is nothing to jump ahead of; tc refuses it too).
func (c Config) Validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", c.Loss}, {"reorder", c.Reorder}, {"duplicate", c.Duplicate}} {
		if !(p.v >= 0 && p.v <= 1) { // also rejects NaN
			return fmt.Errorf("%w: %s probability %v not in [0, 1]", ErrRange, p.name, p.v)
		}
	}
	if c.Delay < 0 || c.Delay > MaxDelay {
		return fmt.Errorf("%w: delay %v not in [0, %v]", ErrRange, c.Delay, MaxDelay)
	}
	if c.Jitter < 0 || c.Jitter > MaxDelay {
		return fmt.Errorf("%w: jitter %v not in [0, %v]", ErrRange, c.Jitter, MaxDelay)
	}
	if c.Limit < 0 || c.Limit > MaxLimit {
		return fmt.Errorf("%w: limit %d not in [0, %d]", ErrRange, c.Limit, MaxLimit)
	}
	if c.Reorder > 0 && c.Delay == 0 {
		return fmt.Errorf("%w: reorder needs a delay", ErrRange)
	}
	return nil
}

// String returns c in the syntax Parse accepts, such that Parse(c.String())
// returns c for every valid c. The zero Config is "".
func (c Config) String() string {
	var b strings.Builder
	word := func(s string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	if c.Delay != 0 || c.Jitter != 0 {
		word("delay " + formatTime(c.Delay))
		if c.Jitter != 0 {
			word(formatTime(c.Jitter))
		}
	}
	if c.Loss != 0 {
		word("loss " + formatProb(c.Loss))
	}
	if c.Reorder != 0 {
		word("reorder " + formatProb(c.Reorder))
	}
	if c.Duplicate != 0 {
		word("duplicate " + formatProb(c.Duplicate))
	}
	if c.Limit != 0 {
		word("limit " + strconv.Itoa(c.Limit))
	}
	return b.String()
}

// formatTime writes d in the largest unit that represents it exactly.
func formatTime(d time.Duration) string {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"s", time.Second}, {"ms", time.Millisecond}, {"us", time.Microsecond}} {
		if d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

// formatProb writes p as a percentage when that parses back to exactly p,
// and as a plain fraction otherwise.
func formatProb(p float64) string {
	s := strconv.FormatFloat(p*100, 'g', -1, 64)
	if v, err := strconv.ParseFloat(s, 64); err == nil && v/100 == p {
		return s + "%"
	}
	return strconv.FormatFloat(p, 'g', -1, 64)
}

// Parse reads a netem-style specification, the arguments of
// "tc qdisc add ... netem" without the qdisc part, for example
//
//	loss 1% delay 20ms reorder 5%
//	delay 10ms 2ms
//	duplicate 1%
//	limit 10000
//
// Keywords, each at most once, in any order:
//
//	delay TIME [JITTER]       (also "latency")
//	loss [random] PERCENT     (also "drop")
//	reorder PERCENT
//	duplicate PERCENT
//	limit PACKETS
//
// TIME is a decimal number with a unit of s, sec, secs, ms, msec, msecs, us,
// usec, usecs or ns (a bare number is microseconds, as for tc). PERCENT is
// "N%" or a fraction in [0, 1] (tc reads "0.01" as 1%). Correlations, loss
// models (state, gemodel), corrupt, rate, slot, reorder gap and jitter
// distributions are rejected with ErrUnsupported. The empty string is the
// zero Config. The result is validated (Config.Validate).
func Parse(spec string) (Config, error) {
	var c Config
	f := strings.Fields(spec)
	seen := make(map[string]bool, 5)
	once := func(kw string) error {
		if seen[kw] {
			return fmt.Errorf("%w: %q given twice", ErrSyntax, kw)
		}
		seen[kw] = true
		return nil
	}
	// value returns the i-th word, if there is one.
	value := func(i int) (string, bool) {
		if i >= len(f) {
			return "", false
		}
		return f[i], true
	}
	for i := 0; i < len(f); {
		kw := f[i]
		i++
		switch kw {
		case "delay", "latency":
			if err := once("delay"); err != nil {
				return Config{}, err
			}
			v, ok := value(i)
			if !ok {
				return Config{}, fmt.Errorf("%w: delay needs a time", ErrSyntax)
			}
			d, err := parseTime(v)
			if err != nil {
				return Config{}, fmt.Errorf("delay: %w", err)
			}
			c.Delay = d
			i++
			if v, ok := value(i); ok && startsNumber(v) {
				j, err := parseTime(v)
				if err != nil {
					return Config{}, fmt.Errorf("delay jitter: %w", err)
				}
				c.Jitter = j
				i++
				if v, ok := value(i); ok && startsNumber(v) {
					return Config{}, fmt.Errorf("%w: delay correlation %q", ErrUnsupported, v)
				}
			}
			if v, ok := value(i); ok && v == "distribution" {
				return Config{}, fmt.Errorf("%w: delay distribution", ErrUnsupported)
			}
		case "loss", "drop":
			if err := once("loss"); err != nil {
				return Config{}, err
			}
			if v, ok := value(i); ok && v == "random" {
				i++
			} else if ok && (v == "state" || v == "gemodel") {
				return Config{}, fmt.Errorf("%w: loss model %q", ErrUnsupported, v)
			}
			p, err := probAt(f, &i, "loss")
			if err != nil {
				return Config{}, err
			}
			c.Loss = p
		case "reorder":
			if err := once(kw); err != nil {
				return Config{}, err
			}
			p, err := probAt(f, &i, kw)
			if err != nil {
				return Config{}, err
			}
			c.Reorder = p
			if v, ok := value(i); ok && v == "gap" {
				return Config{}, fmt.Errorf("%w: reorder gap", ErrUnsupported)
			}
		case "duplicate":
			if err := once(kw); err != nil {
				return Config{}, err
			}
			p, err := probAt(f, &i, kw)
			if err != nil {
				return Config{}, err
			}
			c.Duplicate = p
		case "limit":
			if err := once(kw); err != nil {
				return Config{}, err
			}
			v, ok := value(i)
			if !ok {
				return Config{}, fmt.Errorf("%w: limit needs a packet count", ErrSyntax)
			}
			n, err := strconv.ParseUint(v, 10, 31)
			if err != nil {
				return Config{}, fmt.Errorf("%w: limit %q is not a packet count", ErrSyntax, v)
			}
			c.Limit = int(n)
			i++
		case "corrupt", "rate", "slot", "ecn", "distribution", "gap":
			return Config{}, fmt.Errorf("%w: %q", ErrUnsupported, kw)
		default:
			return Config{}, fmt.Errorf("%w: unknown keyword %q", ErrSyntax, kw)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// probAt parses the probability at f[*i], advances *i past it, and rejects
// a correlation after it.
func probAt(f []string, i *int, kw string) (float64, error) {
	if *i >= len(f) {
		return 0, fmt.Errorf("%w: %s needs a percentage", ErrSyntax, kw)
	}
	p, err := parseProb(f[*i])
	if err != nil {
		return 0, fmt.Errorf("%s: %w", kw, err)
	}
	*i++
	if *i < len(f) && startsNumber(f[*i]) {
		return 0, fmt.Errorf("%w: %s correlation %q", ErrUnsupported, kw, f[*i])
	}
	return p, nil
}

// startsNumber reports whether s looks like a value rather than a keyword.
func startsNumber(s string) bool {
	return s != "" && (s[0] >= '0' && s[0] <= '9' || s[0] == '.' || s[0] == '-' || s[0] == '+')
}

// parseProb reads "N%" (N in [0, 100]) or a fraction in [0, 1].
func parseProb(s string) (float64, error) {
	num, pct := strings.CutSuffix(s, "%")
	if !startsNumber(num) {
		return 0, fmt.Errorf("%w: %q is not a percentage", ErrSyntax, s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: %q is not a percentage", ErrSyntax, s)
	}
	if pct {
		v /= 100
	}
	if v < 0 || v > 1 {
		return 0, fmt.Errorf("%w: %q not in [0%%, 100%%]", ErrRange, s)
	}
	return v, nil
}

// timeUnits maps tc's time suffixes to durations.
var timeUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second,
	"ms": time.Millisecond, "msec": time.Millisecond, "msecs": time.Millisecond,
	"us": time.Microsecond, "usec": time.Microsecond, "usecs": time.Microsecond,
	"":   time.Microsecond,
	"ns": time.Nanosecond, "nsec": time.Nanosecond, "nsecs": time.Nanosecond,
}

// parseTime reads a non-negative decimal number followed by a unit.
func parseTime(s string) (time.Duration, error) {
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == '.' || s[end] == '-' || s[end] == '+') {
		end++
	}
	num, unit := s[:end], s[end:]
	mult, ok := timeUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%w: %q is not a time (e.g. 10ms)", ErrSyntax, s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("%w: %q is not a time (e.g. 10ms)", ErrSyntax, s)
	}
	if v < 0 || v*float64(mult) > float64(MaxDelay) {
		return 0, fmt.Errorf("%w: time %q not in [0, %v]", ErrRange, s, MaxDelay)
	}
	// Integers convert exactly; fractions round to the nanosecond.
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		return time.Duration(n) * mult, nil
	}
	return time.Duration(math.Round(v * float64(mult))), nil
}
