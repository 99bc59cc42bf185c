package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// Regression tests of a hostile review of the command: each test proved a
// bug (described above it) and now guards its fix.

// lockedBuffer is a bytes.Buffer safe for concurrent writes, so that the
// tests below that are not about the output race (see
// TestProgressAndRetryMessagesDoNotRace) do not fail because of it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// czl is cz with writers that tolerate concurrent writes.
func czl(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	return runCommand(t, ctx, false, args)
}

// Regression (review finding 4). The bug:
// A CSV data row whose first field holds a bare quote is a parse error
// before any field position is recorded: readCSV calls r.FieldPos(0) to get
// the line number and panics ("out of range index passed to FieldPos")
// instead of reporting the line.
func TestCSVParseErrorInFirstFieldReportsLine(t *testing.T) {
	ctx := context.Background()
	f := write(t, "a.csv", "timestamp,granularity,element_name,value\n"+
		ts(1)+",HOURLY,c1,1\n"+
		`2026"11,HOURLY,c1,1`+"\n")
	var r result
	panicked := func() (p any) {
		defer func() { p = recover() }()
		r = cz(t, ctx, "send", "--stream", "s", f)
		return nil
	}()
	require.Nil(t, panicked, "send panicked on a malformed CSV line instead of reporting it")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "a.csv:3")
}

// Regression (review finding 2). The bug:
// Delete requests hold 1,000 selectors whatever their size. A selector
// with a long filter (legal: the record rules allow ~10 KB) makes the body
// exceed CloudZero's 5 MB; 413 is not permanent in sendDelete, so the
// command retries the same oversized request until --give-up-after and
// deletes nothing, where the exporter's sender would split it.
// (--give-up-after was 3s in the review; the emulator takes ~4s under -race
// to parse the ~7 MB of correct requests, so it is 20s: the bug still
// fails the test, after 20s.)
func TestDeleteRequestsStayUnder5MB(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	var vals []string
	for i := range 20 {
		vals = append(vals, fmt.Sprintf("v%02d-%s", i, strings.Repeat("x", 300)))
	}
	// One record in a bucket of the range, filter value among the delete's.
	rec := `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"c1","filter":{"custom:f":["` + vals[0] + `"]},"value":"5"}` + "\n"
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "in.jsonl", rec))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "5", em.Ledger().Streams[0].Total)

	args := []string{"delete", "--stream", "s", "--from", ts(1100), "--to", hourAgo.Add(time.Hour).Format(time.RFC3339),
		"--give-up-after", "20s", "--yes"}
	for _, v := range vals {
		args = append(args, "--filter", "custom:f="+v)
	}
	r = czl(t, ctx, sendArgs(em, args...)...)
	assert.Equal(t, exitOK, r.code, "stdout:\n%.600s\nstderr (cut):\n%.600s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "deleted 1101 of 1101 buckets")
	assert.Equal(t, "0", em.Ledger().Streams[0].Total, "the record is deleted")
	assert.Zero(t, em.Ledger().RequestsByStatus["413"], "requests stay under 5 MB")
}

// Regression (review finding 3). The bug:
// A delete range that reaches into the future (e.g. "--from today --to
// tomorrow" to delete today's bad hours) includes selectors with future
// timestamps; CloudZero refuses future timestamps, and since a request is
// all-or-nothing, the past buckets that share the request are not deleted
// either: exit 2, nothing deleted.
func TestDeleteRangeIntoFutureStopsAtCurrentBucket(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(20, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "20", em.Ledger().Streams[0].Total)

	to := time.Now().UTC().Truncate(time.Hour).Add(3 * time.Hour).Format(time.RFC3339)
	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", ts(9), "--to", to, "--yes")...)
	assert.NotEqual(t, exitNone, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Equal(t, "0", em.Ledger().Streams[0].Total, "the past buckets of the range are deleted")
}

// Regression (review finding 6). The bug:
// The exporter never sends an empty filter value: the translator treats an
// empty attribute as missing, and the config refuses an empty static_filter
// value. send accepts "search|" (values "search" and "") and "" inside a
// JSON filter list, and would send them.
func TestEmptyFilterValueRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, file, content, want string }{
		{"csv trailing bar", "a.csv", "timestamp,granularity,element_name,value,custom:feature\n" + ts(1) + ",HOURLY,c1,1,search|\n", "a.csv:2"},
		{"json empty string", "a.jsonl", `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"c1","filter":{"custom:feature":[""]},"value":1}` + "\n", "a.jsonl:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cz(t, ctx, "send", "--stream", "s", write(t, tc.file, tc.content))
			assert.Equal(t, exitUsage, r.code, "stdout:\n%s", r.stdout)
			assert.Contains(t, r.stderr, tc.want)
		})
	}
}

// Regression (review finding 7). The bug:
// The exporter's config refuses a bare "custom:" / "tag:" dimension key
// (config.go dimensionKeyProblem), and CloudZero refuses it too. send
// accepts it as a CSV column and would send every record, each refused.
func TestBareFilterKeyPrefixRefused(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	f := write(t, "a.csv", "timestamp,granularity,element_name,value,custom:\n"+ts(1)+",HOURLY,c1,1,search\n")
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", f)...)
	assert.Equal(t, exitUsage, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stderr, "a.csv:")
	assert.Empty(t, em.Ledger().RequestsByStatus, "nothing should reach CloudZero")
}

// Regression (review finding 13). The bug:
// parseTime's contract is "RFC 3339 (any offset) and, for DAILY data, a
// date". A bare date is also accepted for HOURLY records: a day's usage
// silently lands in the 00:00 hour of an HOURLY stream.
func TestDateRefusedForHourly(t *testing.T) {
	ctx := context.Background()
	day := hourAgo.Add(-48 * time.Hour).Format("2006-01-02")
	f := write(t, "a.csv", "timestamp,granularity,element_name,value\n"+day+",HOURLY,c1,240\n")
	r := cz(t, ctx, "send", "--stream", "s", f)
	assert.Equal(t, exitUsage, r.code, "stdout:\n%s", r.stdout)
	assert.Contains(t, r.stderr, "a.csv:2")
}

// Regression (review finding 11). The bug:
// With a daily budget smaller than a delete request (1,000 selectors, or
// fewer for a short range), the limiter answers ErrInvalid before anything
// is sent; sendDelete reports that as CloudZero's refusal ("refused (600
// buckets ...)") and exits 2 ("CloudZero refused it"), though no request
// was made and the budget would have allowed 500 of the 600 buckets.
func TestDeleteBeyondDailyBudgetIsLocalUsageError(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(10, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	before := em.Ledger().RequestsByStatus["201"]

	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", ts(599), "--to", hourAgo.Add(time.Hour).Format(time.RFC3339),
		"--records-per-day", "500", "--give-up-after", "2s", "--yes")...)
	t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.NotContains(t, r.stderr, "refused", "CloudZero refused nothing: no delete request was sent")
	assert.NotEqual(t, exitNone, r.code, "exit 2 claims CloudZero refused it")
	assert.Equal(t, before, em.Ledger().RequestsByStatus["201"], "indeed no delete request was made")
}

// Regression (review finding 12). The bug:
// The API key is never printed, says the contract. A user who passes the
// key itself to --api-key-file (the flag that exists for it) gets it
// echoed in the error message: "--api-key-file: open <KEY>: no such file".
func TestAPIKeyFileErrorDoesNotEchoValue(t *testing.T) {
	ctx := context.Background()
	f := write(t, "a.csv", csvInput)
	var out, errb strings.Builder
	code := run(ctx, []string{"send", "--stream", "s", "--endpoint", "http://127.0.0.1:1", "--api-key-file", testKey, "--yes", f},
		env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now})
	assert.Equal(t, exitUsage, code)
	assert.NotContains(t, out.String()+errb.String(), testKey, "the API key was printed")
}

// Regression (review finding 9). The bug:
// The progress goroutine (startProgress) writes to stderr while the
// command's own goroutine writes its retry lines ("retrying in ...") to the
// same writer, without synchronisation: a data race on env.stderr (with a
// terminal, the bar's "\r" lines and the retry lines interleave). Any run
// that retries for longer than progressTick (2s) shows it.
func TestProgressAndRetryMessagesDoNotRace(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := czl(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(10, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 10000, Status: 503}}}))
	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", ts(5), "--to", hourAgo.Format(time.RFC3339),
		"--give-up-after", "2500ms", "--yes")...)
	assert.Equal(t, exitNone, r.code)
	assert.Contains(t, r.stderr, "settled", "a progress line was written meanwhile")
}

// Regression (review finding 10). The bug:
// preview promises "every drop and its reason", but reads only the
// translator's datapoints_* counters. A record the delivery core drops
// (net usage not > 0: a gauge with value: sum and negative samples) is
// neither printed nor reported as dropped: the output reads as if the
// points had produced nothing, silently.
func TestPreviewShowsDeliveryDrops(t *testing.T) {
	ctx := context.Background()
	config := write(t, "collector.yaml", `
exporters:
  cloudzero:
    endpoint: http://127.0.0.1:1
    api_key: k
    streams:
      - name: levels
        metrics: [app.level]
        element_name: customer.id
        value: sum
`)
	at := hourAgo.Add(10 * time.Minute)
	gauge := func(el string, v string, at time.Time) string {
		return `{"attributes":[{"key":"customer.id","value":{"stringValue":"` + el + `"}}],"timeUnixNano":"` + fmt.Sprint(at.UnixNano()) + `","asDouble":` + v + `}`
	}
	line := `{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{},"metrics":[{"name":"app.level","gauge":{"dataPoints":[` +
		gauge("c1", "-5", at) + `,` + gauge("c2", "3", at) + `]}}]}]}]}`
	r := cz(t, ctx, "preview", "--config", config, write(t, "m.jsonl", line+"\n"))
	require.Equal(t, exitOK, r.code, r.stderr)
	t.Logf("stdout:\n%s", r.stdout)
	assert.Regexp(t, `levels\s+\S+\s+HOURLY\s+c2\s+\s*3\n`, r.stdout)
	assert.Contains(t, r.stdout, "dropped 1 ", "c1's record (net -5) is dropped by the exporter; preview should say so")
}

// Regression (review finding 8). The bug:
// The exporter checks record.ValueFits on the aggregated total too (the
// translator's value_out_of_range "after adding up"). send checks each
// input record, then adds records of the same key and sends the total
// unchecked: two rows of 6e63 become a 65-digit value, beyond
// record.MaxValueChars, which the record size bound (MaxEncodedBytes)
// assumes.
func TestMergedTotalValidated(t *testing.T) {
	ctx := context.Background()
	f := write(t, "a.csv", "timestamp,granularity,element_name,value\n"+
		ts(1)+",HOURLY,c1,6e63\n"+
		ts(1)+",HOURLY,c1,6e63\n")
	r := cz(t, ctx, "send", "--stream", "s", f)
	t.Logf("stdout:\n%s", r.stdout)
	assert.Equal(t, exitUsage, r.code, "the merged total 1.2e64 does not fit %d characters", 64)
}

// Regression (review finding 14). The bug:
// An interrupted run (give-up) prints the Delivery's shutdown message
// "without storage they are lost": for the command nothing is lost (the
// records are in the input file and listed as "not sent"; running again
// finishes). The message contradicts the report and the README.
func TestInterruptedRunDoesNotSayLost(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{Faults: emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1000, Status: 503}}}})
	r := czl(t, ctx, sendArgs(em, "send", "--stream", "s", "--give-up-after", "500ms", "--yes", write(t, "a.csv", bigCSV(10, "1")))...)
	assert.Equal(t, exitNone, r.code, r.stderr)
	assert.Contains(t, r.stdout, "not sent 10")
	assert.NotContains(t, r.stderr, "lost", "stderr:\n%s", r.stderr)
}

// Regression (review finding 1). The bug:
// Interrupting a run (Ctrl-C cancels run's context; --give-up-after ends
// it the same way) does not stop sending: deliver calls d.Shutdown with
// context.WithoutCancel(ctx), and the Delivery's shutdown flush sends
// everything again for up to ShutdownTimeout (1s). Records are applied to
// CloudZero after the user interrupted: with sum, after they may have
// decided the run was wrong.
func TestInterruptSendsNothingMore(t *testing.T) {
	em := startEmulator(t, emulator.Config{Faults: emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1000, Status: 503}}}})
	f := write(t, "a.csv", bigCSV(10, "1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- czl(t, ctx, "send", "--endpoint", em.URL, "--retry-initial-interval", "20s", "--retry-max-interval", "20s",
			"--op", "sum", "--stream", "s", "--yes", f)
	}()
	require.Eventually(t, func() bool { return em.Ledger().RequestsByStatus["503"] > 0 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{})) // CloudZero answers again
	cancel()                                                        // the user presses Ctrl-C
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("send did not return after the interrupt")
	}
	t.Logf("code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	assert.Empty(t, em.Ledger().Streams, "records were applied after the interrupt")
}

// Regression (review finding 5). The bug:
// The exporter refuses an api_key with whitespace inside it (config.go:
// "contains whitespace inside the key"). The command only trims the ends:
// a key file of two lines ("KEY\n# rotated 2026-11") gives an Authorization
// header Go refuses to send; that transport error counts as transient, so
// the command retries it until --give-up-after (15 minutes by default) and
// ends with exit 2 "nothing applied" instead of a usage error at once.
func TestKeyFileWithWhitespaceIsUsageError(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	keyFile := write(t, "key", testKey+"\n# rotated 2026-11\n")
	start := time.Now()
	var out, errb lockedBuffer
	code := run(ctx, append(sendArgs(em, "send", "--stream", "s", "--api-key-file", keyFile, "--give-up-after", "3s", "--yes"), write(t, "a.csv", csvInput)),
		env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now})
	took := time.Since(start)
	t.Logf("code %d after %s\nstdout:\n%s\nstderr:\n%s", code, took, out.String(), errb.String())
	assert.Equal(t, exitUsage, code, "a malformed key is a usage error")
	assert.Less(t, took, 2*time.Second, "no retries for a key that can never be sent")
	assert.NotContains(t, out.String()+errb.String(), testKey)
}

// Regression (review finding 15). The bug:
// readRecords strips a UTF-8 byte order mark to detect the format, and
// readCSV strips it too, but readDocument and the JSON-lines reader parse
// the data with the mark: a JSON file saved by a Windows editor (BOM) is
// refused as "not a {"records":[...]} document".
func TestJSONWithBOMAccepted(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ name, file, content string }{
		{"document", "a.json", "\ufeff" + jsonInput},
		{"lines", "a.jsonl", "\ufeff" + jsonLinesInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cz(t, ctx, "send", "--stream", "s", write(t, tc.file, tc.content))
			assert.Equal(t, exitOK, r.code, r.stderr)
			assert.Contains(t, r.stdout, "2 to send")
		})
	}
}

// A 413 splits a delete request in halves (the byte bound keeps requests
// under 5 MB; a CloudZero that finds one too large anyway gets smaller
// ones, as the exporter's sender does), and the rest of the run goes on.
func TestDelete413SplitsRequest(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(10, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 2, Status: 413}}}))
	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", ts(9), "--to", hourAgo.Add(time.Hour).Format(time.RFC3339),
		"--give-up-after", "10s", "--yes")...)
	require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "deleted 10 of 10 buckets")
	assert.NotContains(t, r.stderr, "refused")
	assert.Equal(t, "0", em.Ledger().Streams[0].Total)
	assert.EqualValues(t, 2, em.Ledger().RequestsByStatus["413"], "the whole request, then its first half")
}

// --filter splits its value on "|" as send's CSV does; an empty value or
// a bare prefix key is refused, as in send.
func TestDeleteFilterFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want map[string][]string
		err  string
	}{
		{"one value", []string{"custom:f=a"}, map[string][]string{"custom:f": {"a"}}, ""},
		{"split on bar", []string{"custom:f=a|b"}, map[string][]string{"custom:f": {"a", "b"}}, ""},
		{"repeated", []string{"custom:f=a", "custom:f=b|c", "tag:t=x"}, map[string][]string{"custom:f": {"a", "b", "c"}, "tag:t": {"x"}}, ""},
		{"no equals", []string{"custom:f"}, nil, "want key=value"},
		{"empty value", []string{"custom:f="}, nil, "want key=value"},
		{"trailing bar", []string{"custom:f=a|"}, nil, "empty value"},
		{"bare prefix", []string{"custom:=a"}, nil, "bare prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filterFlag{}
			var err error
			for _, a := range tc.args {
				if err = f.Set(a); err != nil {
					break
				}
			}
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, map[string][]string(f))
		})
	}
}

// On a terminal, a message written while the progress bar holds the line
// starts on a line of its own; elsewhere, writes pass unchanged.
func TestSyncWriter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		terminal bool
		writes   []string
		want     string
	}{
		{"terminal: message after bar", true, []string{"\rbar 1/2", "\rbar 2/2", "retrying\n", "\rbar 2/2\n"}, "\rbar 1/2\rbar 2/2\nretrying\n\rbar 2/2\n"},
		{"terminal: whole lines", true, []string{"a\n", "b\n"}, "a\nb\n"},
		{"not a terminal", false, []string{"a", "b\n"}, "ab\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &syncWriter{w: &b, terminal: tc.terminal}
			for _, s := range tc.writes {
				_, err := w.Write([]byte(s))
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, b.String())
		})
	}
}
