package sched

// Warmup is the linear warmup shared by most kinds: update n+1 (n < W) uses
// warmup_start_lr + (target − warmup_start_lr)·n/W, so update W+1 is the first
// at the target rate.
type Warmup struct {
	// WarmupSteps is W; default 0 (no warmup), >= 0.
	WarmupSteps int64 `spec:"warmup_steps"`
	// WarmupStartLR is the rate of the first update; default 0, finite, >= 0.
	WarmupStartLR float64 `spec:"warmup_start_lr"`
}

func (w *Warmup) check(c *checks) {
	c.rate("warmup_start_lr", w.WarmupStartLR)
	c.steps("warmup_steps", w.WarmupSteps, 0)
}

// at reports the warmup rate for n < W.
func (w *Warmup) at(n int64, target float64) (float64, bool) {
	if n >= w.WarmupSteps {
		return 0, false
	}
	return w.WarmupStartLR + (target-w.WarmupStartLR)*float64(n)/float64(w.WarmupSteps), true
}
