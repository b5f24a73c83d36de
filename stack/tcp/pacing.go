package tcp

import "time"

// Pacing, for a controller that asks for it (RateController.PacingRate):
// segments leave no faster than the rate, in bursts of at most
// paceQuantum's worth (timers are not precise enough for single segments).

// paceQuantum is the longest burst pacing lets out at once.
const paceQuantum = time.Millisecond

// paceBlocked reports whether pacing holds the next transmission back; if
// so it arms the pacing timer.
func (e *Endpoint) paceBlocked() bool {
	if e.rateCC == nil || e.tlpProbe || e.forceRetx {
		return false
	}
	now := e.now()
	if !e.paceNext.After(now.Add(paceQuantum)) {
		return false
	}
	e.paceTimer.set(e.paceNext.Add(-paceQuantum))
	return true
}

// paced accounts n bytes just sent against the pacing rate.
func (e *Endpoint) paced(n int) {
	if e.rateCC == nil {
		return
	}
	rate := e.rateCC.PacingRate()
	if rate <= 0 {
		return
	}
	now := e.now()
	if e.paceNext.Before(now) {
		e.paceNext = now
	}
	// Headers count too (IP and TCP, 52 bytes with timestamps).
	e.paceNext = e.paceNext.Add(time.Duration(int64(n+52) * int64(time.Second) / rate))
}
