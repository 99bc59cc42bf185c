package emulator

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func intp(i int) *int { return &i }

func TestInjectedStatuses(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Faults = FaultConfig{Steps: []FaultStep{
			{Count: 2, Status: 429, RetryAfterSeconds: intp(2)},
			{Count: 1, Status: 429},
			{Count: 1, Status: 503},
			{Count: 1, Status: 503, RetryAfterSeconds: intp(0)},
			{Count: 1, Status: 500},
		}}
	})
	// A request that fails auth does not consume a step.
	b, _ := json.Marshal(body(rec(hour0, Hourly, "a", 1, nil)))
	require.Equal(t, 403, f.do(http.MethodPost, streamURL("s", "sum"), bytes.NewReader(b), map[string]string{"Authorization": "x"}).status)

	want := []struct {
		status     int
		retryAfter string
	}{{429, "2"}, {429, "2"}, {429, ""}, {503, ""}, {503, "0"}, {500, ""}, {200, ""}, {200, ""}}
	for i, w := range want {
		r := f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil)))
		assert.Equal(t, w.status, r.status, "request %d", i)
		assert.Equal(t, w.retryAfter, r.retryAfter, "request %d", i)
		if w.status != 200 {
			assert.Equal(t, ReasonInjected, r.reason)
		}
	}
	l := f.ledger()
	assert.Equal(t, "2", findStream(l, "s").Total, "injected failures store nothing")
	assert.Equal(t, map[string]int64{"429": 3, "503": 2, "500": 1}, l.InjectedFaults)
	assert.Equal(t, map[string]int64{"200": 2, "403": 1, "429": 3, "500": 1, "503": 2}, l.RequestsByStatus)
	assert.Zero(t, l.AmbiguousAppliedRequests)
	st := f.srv.Faults()
	assert.Equal(t, len(st.Steps), st.StepIndex)
}

func TestAmbiguousApplied(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Faults = FaultConfig{Steps: []FaultStep{
			{Count: 1, Status: 503, Apply: true, RetryAfterSeconds: intp(1)},
			{Count: 1, Status: 503, Apply: true}, // consumed by an invalid request
		}}
	})
	req := body(rec(hour0, Hourly, "a", "0.1", nil), rec(hour0, Hourly, "b", "0.2", nil))
	r := f.post(streamURL("s", "sum"), req)
	assert.Equal(t, 503, r.status)
	assert.Equal(t, "1", r.retryAfter)
	l := f.ledger()
	assert.Equal(t, "0.3", findStream(l, "s").Total, "the records ARE stored")
	assert.Equal(t, int64(1), l.AmbiguousAppliedRequests)
	assert.Equal(t, int64(2), l.AmbiguousAppliedRecords)
	assert.Equal(t, "0.3", l.AmbiguousAppliedUnits, "exactly what a re-send counts twice")

	// An invalid request under an apply step gets its real answer.
	r = f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", "-1", nil)))
	assert.Equal(t, 400, r.status)

	// The client retries the sum: it counts twice.
	r = f.post(streamURL("s", "sum"), req)
	assert.Equal(t, 200, r.status)
	l = f.ledger()
	assert.Equal(t, "0.6", findStream(l, "s").Total)
	assert.Equal(t, int64(1), l.AmbiguousAppliedRequests)
	assert.Equal(t, int64(4), l.RecordsAccepted)
	assert.Equal(t, map[string]int64{"503": 1}, l.InjectedFaults)

	// replace is idempotent: an ambiguous replace retried changes nothing.
	require.NoError(t, f.srv.SetFaults(FaultConfig{Steps: []FaultStep{{Count: 1, Status: 502, Apply: true}}}))
	rep := body(rec(hour0, Hourly, "a", "5", nil))
	assert.Equal(t, 502, f.post(streamURL("s", "replace"), rep).status)
	assert.Equal(t, 200, f.post(streamURL("s", "replace"), rep).status)
	assert.Equal(t, map[string]string{hour0 + "|a|{}": "5", hour0 + "|b|{}": "0.4"}, entryValues(t, f.ledger(), "s"))
}

func TestRepeatingPattern(t *testing.T) {
	f := newFixture(t)
	code, _ := f.admin(http.MethodPost, "/emulator/faults", `{"steps":[{"count":2},{"count":1,"status":503,"retry_after_seconds":1}],"repeat":true}`)
	require.Equal(t, 200, code)
	var got []int
	for range 9 {
		got = append(got, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	}
	assert.Equal(t, []int{200, 200, 503, 200, 200, 503, 200, 200, 503}, got)
	assert.Equal(t, "6", findStream(f.ledger(), "s").Total)
}

func TestDelay(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Faults = FaultConfig{Steps: []FaultStep{{Count: 1, DelayMS: 300}, {Count: 1, Status: 503, DelayMS: 200}}}
	})
	start := time.Now()
	assert.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	start = time.Now()
	assert.Equal(t, 503, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	start = time.Now()
	assert.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	assert.Less(t, time.Since(start), 200*time.Millisecond)
	assert.Equal(t, "2", findStream(f.ledger(), "s").Total)
}

// A slow answer after the request was applied, and a client that gives up: the
// records are stored and the ledger counts the request as abandoned.
func TestAbandonedDuringDelay(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Faults = FaultConfig{Steps: []FaultStep{{Count: 1, DelayMS: 30_000}}}
	})
	impatient := f.ts.Client()
	impatient.Timeout = 200 * time.Millisecond
	b, _ := json.Marshal(body(rec(hour0, Hourly, "a", "2.5", nil), rec(hour0, Hourly, "b", "1", nil)))
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+streamURL("s", "sum"), bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", testKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := impatient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err, "the client times out")

	eventually(t, 5*time.Second, func() bool { return f.ledger().AbandonedAppliedRequests == 1 }, "abandoned request counted")
	l := f.ledger()
	assert.Equal(t, int64(2), l.AbandonedAppliedRecords)
	assert.Equal(t, "3.5", findStream(l, "s").Total)
}

func TestFaultsAdminAPI(t *testing.T) {
	f := newFixture(t)
	bad := []string{
		`{"steps":[{"count":0,"status":503}]}`,
		`{"steps":[{"count":1,"status":200}]}`,
		`{"steps":[{"count":1,"status":600}]}`,
		`{"steps":[{"count":1,"apply":true}]}`,
		`{"steps":[{"count":1,"retry_after_seconds":3}]}`,
		`{"steps":[{"count":1,"status":429,"retry_after_seconds":-1}]}`,
		`{"steps":[{"count":1,"delay_ms":-5}]}`,
		`{"steps":[{"count":1,"status":503,"colour":"red"}]}`,
		`{"steps":`,
	}
	for _, b := range bad {
		code, _ := f.admin(http.MethodPost, "/emulator/faults", b)
		assert.Equal(t, 400, code, b)
	}
	code, out := f.admin(http.MethodPost, "/emulator/faults", `{"steps":[{"count":2,"status":429,"retry_after_seconds":1}]}`)
	require.Equal(t, 200, code)
	assert.Contains(t, out, `"remaining_in_step": 2`)
	assert.Equal(t, 429, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
	code, out = f.admin(http.MethodGet, "/emulator/faults", "")
	require.Equal(t, 200, code)
	var st FaultState
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Equal(t, 0, st.StepIndex)
	assert.Equal(t, 1, st.RemainingInStep)
	code, _ = f.admin(http.MethodDelete, "/emulator/faults", "")
	require.Equal(t, 200, code)
	assert.Equal(t, 200, f.post(streamURL("s", "sum"), body(rec(hour0, Hourly, "a", 1, nil))).status)
}

func TestRateLimitTokenBucket(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Limits = Limits{RecordsPerSecond: 10, Burst: 10} })
	recs := func(n int) map[string]any {
		rs := make([]map[string]any, n)
		for i := range rs {
			rs[i] = rec(hour0, Hourly, "a", 1, nil)
		}
		return body(rs...)
	}
	p := streamURL("s", "sum")
	require.Equal(t, 200, f.post(p, recs(6)).status)
	r := f.post(p, recs(5)) // 4 tokens left
	require.Equal(t, 429, r.status)
	assert.Equal(t, "1", r.retryAfter)
	assert.Equal(t, ReasonRateLimited, r.reason)
	f.clock.Advance(100 * time.Millisecond) // +1 token
	require.Equal(t, 200, f.post(p, recs(5)).status)
	require.Equal(t, 429, f.post(p, recs(1)).status)

	// A request larger than the bucket passes when the bucket is full, then the
	// bucket is in debt.
	f.clock.Advance(10 * time.Second)
	require.Equal(t, 200, f.post(p, recs(25)).status)
	r = f.post(p, recs(1))
	require.Equal(t, 429, r.status)
	assert.Equal(t, "2", r.retryAfter, "16 tokens short at 10/s")
	f.clock.Advance(1600 * time.Millisecond)
	require.Equal(t, 200, f.post(p, recs(1)).status)

	l := f.ledger()
	assert.Equal(t, "37", findStream(l, "s").Total, "rate-limited requests store nothing")
	assert.Equal(t, int64(3), l.RequestsByStatus["429"])
	assert.Equal(t, int64(3), l.RejectionsByReason[ReasonRateLimited])
}

func TestDailyBudget(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Limits = Limits{RecordsPerDay: 5} })
	p := streamURL("s", "sum")
	three := body(rec(hour0, Hourly, "a", 1, nil), rec(hour0, Hourly, "a", 1, nil), rec(hour0, Hourly, "a", 1, nil))
	require.Equal(t, 200, f.post(p, three).status)
	r := f.post(p, three)
	require.Equal(t, 429, r.status)
	assert.Equal(t, ReasonDailyBudget, r.reason)
	assert.Equal(t, "41104", r.retryAfter, "seconds from 12:34:56 to the next UTC midnight")
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 1, nil), rec(hour0, Hourly, "a", 1, nil))).status)
	require.Equal(t, 429, f.post(p, body(rec(hour0, Hourly, "a", 1, nil))).status)
	f.clock.Advance(12 * time.Hour) // next UTC day
	require.Equal(t, 200, f.post(p, three).status)
	assert.Equal(t, "8", findStream(f.ledger(), "s").Total)
}

func TestLimitsAdminAPI(t *testing.T) {
	f := newFixture(t)
	code, _ := f.admin(http.MethodPost, "/emulator/limits", `{"records_per_second":-1}`)
	assert.Equal(t, 400, code)
	code, _ = f.admin(http.MethodPost, "/emulator/limits", `{"rps":1}`)
	assert.Equal(t, 400, code)
	code, out := f.admin(http.MethodPost, "/emulator/limits", `{"records_per_second":1}`)
	require.Equal(t, 200, code)
	assert.Contains(t, out, `"records_per_second": 1`)
	p := streamURL("s", "sum")
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 1, nil))).status)
	r := f.post(p, body(rec(hour0, Hourly, "a", 1, nil)))
	require.Equal(t, 429, r.status)
	assert.Equal(t, "1", r.retryAfter)
	code, _ = f.admin(http.MethodPost, "/emulator/limits", `{}`)
	require.Equal(t, 200, code)
	require.Equal(t, 200, f.post(p, body(rec(hour0, Hourly, "a", 1, nil))).status)
}

func TestRetryAfterSeconds(t *testing.T) {
	assert.Equal(t, 1, retryAfterSeconds(0))
	assert.Equal(t, 1, retryAfterSeconds(time.Millisecond))
	assert.Equal(t, 1, retryAfterSeconds(time.Second))
	assert.Equal(t, 2, retryAfterSeconds(1001*time.Millisecond))
}
