package emulator

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// FaultStep applies to the next Count API requests (authenticated POSTs to a known
// route; 403, 404 and 405 answers do not consume a step).
//
//   - Status 0: the request is handled normally (use it with DelayMS, or as a gap
//     between failures in a repeating pattern).
//   - Status 4xx/5xx, Apply false: the request is answered with Status without being
//     read or stored.
//   - Status 4xx/5xx, Apply true: the request is handled normally and, if it was
//     applied, its records ARE stored but the answer is Status (an ambiguous failure:
//     a client that retries a sum counts it twice). A request that fails validation
//     gets its real error instead.
//   - RetryAfterSeconds, when set, is sent as the Retry-After header with Status.
//   - DelayMS delays the answer (after the records are stored, so a client that times
//     out cannot know whether the request was applied).
type FaultStep struct {
	Count             int  `json:"count"`
	Status            int  `json:"status,omitempty"`
	Apply             bool `json:"apply,omitempty"`
	RetryAfterSeconds *int `json:"retry_after_seconds,omitempty"`
	DelayMS           int  `json:"delay_ms,omitempty"`
}

// FaultConfig is what POST /emulator/faults takes: it replaces the whole fault
// configuration ({} clears it). Steps are consumed in order; with Repeat the
// sequence starts again when it is exhausted (e.g. [{count:2},{count:1,status:503}]
// repeated fails every third request).
type FaultConfig struct {
	Steps  []FaultStep `json:"steps"`
	Repeat bool        `json:"repeat,omitempty"`
}

// FaultState is what GET /emulator/faults returns.
type FaultState struct {
	FaultConfig
	// StepIndex is the step the next request will consume (len(Steps) when done).
	StepIndex int `json:"step_index"`
	// RemainingInStep is how many requests the current step still applies to.
	RemainingInStep int `json:"remaining_in_step"`
}

// Validate checks a fault configuration.
func (c FaultConfig) Validate() error {
	for i, s := range c.Steps {
		switch {
		case s.Count < 1:
			return fmt.Errorf("steps[%d].count must be >= 1", i)
		case s.Status != 0 && (s.Status < 400 || s.Status > 599):
			return fmt.Errorf("steps[%d].status must be 0 or 400..599", i)
		case s.Apply && s.Status == 0:
			return fmt.Errorf("steps[%d].apply needs a status", i)
		case s.RetryAfterSeconds != nil && *s.RetryAfterSeconds < 0:
			return fmt.Errorf("steps[%d].retry_after_seconds must be >= 0", i)
		case s.RetryAfterSeconds != nil && s.Status == 0:
			return fmt.Errorf("steps[%d].retry_after_seconds needs a status", i)
		case s.DelayMS < 0 || s.DelayMS > 600_000:
			return fmt.Errorf("steps[%d].delay_ms must be 0..600000", i)
		}
	}
	return nil
}

// faults is the fault sequence. Not safe for concurrent use: Server serialises.
type faults struct {
	cfg       FaultConfig
	index     int
	remaining int
}

func (f *faults) set(c FaultConfig) {
	f.cfg = c
	f.index = 0
	f.remaining = 0
	if len(c.Steps) > 0 {
		f.remaining = c.Steps[0].Count
	}
}

// next consumes one request's worth of the sequence; ok is false when no step applies.
func (f *faults) next() (FaultStep, bool) {
	if f.index >= len(f.cfg.Steps) {
		return FaultStep{}, false
	}
	step := f.cfg.Steps[f.index]
	f.remaining--
	if f.remaining <= 0 {
		f.index++
		if f.index >= len(f.cfg.Steps) && f.cfg.Repeat {
			f.index = 0
		}
		if f.index < len(f.cfg.Steps) {
			f.remaining = f.cfg.Steps[f.index].Count
		}
	}
	return step, true
}

func (f *faults) state() FaultState {
	c := FaultConfig{Steps: append([]FaultStep{}, f.cfg.Steps...), Repeat: f.cfg.Repeat}
	rem := 0
	if f.index < len(f.cfg.Steps) {
		rem = f.remaining
	}
	return FaultState{FaultConfig: c, StepIndex: f.index, RemainingInStep: rem}
}

// Limits is the optional rate limiting, in records (GET/POST /emulator/limits).
// Zero values switch a limit off. cloudzero-api.md's default policy is
// records_per_second 5000, burst 300000, records_per_day 1000000; the emulator
// starts with no limit unless told.
type Limits struct {
	// RecordsPerSecond refills a token bucket of Burst records (0 = no limit).
	RecordsPerSecond float64 `json:"records_per_second"`
	// Burst is the bucket's size; 0 means one second's worth (at least 1).
	Burst float64 `json:"burst"`
	// RecordsPerDay is a budget per UTC day (0 = no limit).
	RecordsPerDay int64 `json:"records_per_day"`
}

// Validate checks the limits.
func (l Limits) Validate() error {
	if l.RecordsPerSecond < 0 || l.Burst < 0 || l.RecordsPerDay < 0 ||
		math.IsNaN(l.RecordsPerSecond) || math.IsInf(l.RecordsPerSecond, 0) ||
		math.IsNaN(l.Burst) || math.IsInf(l.Burst, 0) {
		return errors.New("limits must be finite and >= 0")
	}
	return nil
}

func (l Limits) burst() float64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return math.Max(l.RecordsPerSecond, 1)
}

// limiter applies Limits. Not safe for concurrent use: Server serialises.
type limiter struct {
	limits Limits
	tokens float64
	last   time.Time
	day    string // UTC day of dayUsed
	used   int64
}

func (l *limiter) set(lim Limits, now time.Time) {
	*l = limiter{limits: lim, tokens: lim.burst(), last: now}
}

// take asks for n records at now. On refusal it returns the reason and how long to
// wait, and takes nothing. A request larger than the bucket passes when the bucket
// is full (leaving it in debt), so that it is never refused forever.
func (l *limiter) take(n int, now time.Time) (ok bool, reason string, wait time.Duration) {
	day := now.UTC().Format("2006-01-02")
	if day != l.day {
		l.day, l.used = day, 0
	}
	if l.limits.RecordsPerDay > 0 && l.used+int64(n) > l.limits.RecordsPerDay {
		y, m, d := now.UTC().Date()
		midnight := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
		return false, ReasonDailyBudget, midnight.Sub(now)
	}
	if rate := l.limits.RecordsPerSecond; rate > 0 {
		burst := l.limits.burst()
		if el := now.Sub(l.last).Seconds(); el > 0 {
			l.tokens = math.Min(burst, l.tokens+el*rate)
		}
		l.last = now
		need := math.Min(float64(n), burst)
		if l.tokens < need {
			return false, ReasonRateLimited, time.Duration((need - l.tokens) / rate * float64(time.Second))
		}
		l.tokens -= float64(n)
	}
	l.used += int64(n)
	return true, "", 0
}

// retryAfterSeconds rounds a wait up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}
