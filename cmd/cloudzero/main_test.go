package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "test-key-5ecr3t"

// hourAgo is the start of the hour before the current one: a closed bucket.
var hourAgo = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)

func ts(h int) string { return hourAgo.Add(time.Duration(-h) * time.Hour).Format(time.RFC3339) }

func startEmulator(t *testing.T, cfg emulator.Config) *emulator.Instance {
	t.Helper()
	cfg.APIKey = testKey
	em, err := emulator.Start("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = em.Shutdown(context.Background()) })
	return em
}

type result struct {
	code           int
	stdout, stderr string
}

// cz runs the command with the test key in its environment.
func cz(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	return runCommand(t, ctx, false, args)
}

// runCommand runs the command with the test key in its environment, on a
// terminal or not, and checks that the key was never printed.
func runCommand(t *testing.T, ctx context.Context, terminal bool, args []string) result {
	t.Helper()
	var out, errb lockedBuffer
	code := run(ctx, args, env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, terminal: terminal,
		getenv: func(k string) string {
			if k == keyEnv {
				return testKey
			}
			return ""
		}, now: time.Now})
	r := result{code, out.String(), errb.String()}
	assert.NotContains(t, r.stdout+r.stderr, testKey, "the API key was printed")
	return r
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// entries maps "stream element timestamp filter" to the stored value.
func entries(em *emulator.Instance) map[string]string {
	out := map[string]string{}
	for _, s := range em.Ledger().Streams {
		for _, e := range s.Entries {
			out[fmt.Sprintf("%s %s %s %v", s.Name, e.ElementName, e.Timestamp, e.Filter)] = e.Value
		}
	}
	return out
}

// fast: retries every ~50ms instead of 1s, so that fault storms take
// moments; the retry policy is the flag under test nowhere else.
var fast = []string{"--retry-initial-interval", "50ms", "--retry-max-interval", "200ms"}

func sendArgs(em *emulator.Instance, args ...string) []string {
	return append(append([]string{args[0], "--endpoint", em.URL}, fast...), args[1:]...)
}

var csvInput = "timestamp,granularity,element_name,value,custom:feature\n" +
	ts(1) + ",HOURLY,c1,10,search\n" +
	hourAgo.Add(-time.Hour+30*time.Minute).Format(time.RFC3339) + ",HOURLY,c1,2.5,search\n" + // same bucket: merged
	ts(2) + ",HOURLY,c2,4,search|export\n"

var jsonInput = `{"records": [
  {"timestamp": "` + ts(1) + `", "granularity": "HOURLY", "element_name": "c1", "filter": {"custom:feature": ["search"]}, "value": "12.5"},
  {"timestamp": "` + ts(2) + `", "granularity": "HOURLY", "element_name": "c2", "filter": {"custom:feature": ["export", "search"]}, "value": 4}
]}`

var jsonLinesInput = `{"timestamp": "` + ts(1) + `", "granularity": "HOURLY", "element_name": "c1", "filter": {"custom:feature": ["search"]}, "value": "12.5"}
{"timestamp": "` + ts(2) + `", "granularity": "HOURLY", "element_name": "c2", "filter": {"custom:feature": ["search", "export"]}, "value": "4"}
`

var wantGood = map[string]string{
	"s c1 " + ts(1) + " map[custom:feature:[search]]":        "12.5",
	"s c2 " + ts(2) + " map[custom:feature:[export search]]": "4",
}

// Each input form, each operation: a dry run sends nothing; --yes sends
// the merged records; a second replace changes nothing, a second sum adds.
func TestSendGoodInput(t *testing.T) {
	ctx := context.Background()
	for _, in := range []struct{ name, file, content string }{
		{"csv", "in.csv", csvInput}, {"json", "in.json", jsonInput}, {"json lines", "in.jsonl", jsonLinesInput},
	} {
		for _, op := range []string{"replace", "sum"} {
			t.Run(in.name+" "+op, func(t *testing.T) {
				em := startEmulator(t, emulator.Config{})
				f := write(t, in.file, in.content)
				r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--op", op, f)...)
				require.Equal(t, exitOK, r.code, r.stderr)
				assert.Contains(t, r.stdout, "dry run: nothing was sent")
				assert.Regexp(t, `s\s+`+op+`\s+2\s+2\s+`+ts(2)+`\s+`+ts(1)+`\s+16.5`, r.stdout)
				assert.Empty(t, entries(em))

				r = cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--op", op, f, "--yes")...)
				require.Equal(t, exitOK, r.code, r.stderr)
				assert.Contains(t, r.stdout, "applied 2 records, refused 0, not sent 0")
				assert.Equal(t, wantGood, entries(em))

				r = cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--op", op, "--yes", f)...)
				require.Equal(t, exitOK, r.code, r.stderr)
				want := wantGood
				if op == "sum" {
					want = map[string]string{}
					for k, v := range wantGood {
						want[k] = map[string]string{"12.5": "25", "4": "8"}[v]
					}
				}
				assert.Equal(t, want, entries(em))
			})
		}
	}
}

// Every validation rule, each reported with its file and line, and
// nothing sent.
func TestSendBadInput(t *testing.T) {
	ctx := context.Background()
	head := "timestamp,granularity,element_name,value,custom:feature\n"
	long := strings.Repeat("x", 10_001)
	many := func(n int) string {
		var v []string
		for i := range n {
			v = append(v, fmt.Sprintf("v%d", i))
		}
		return strings.Join(v, "|")
	}
	for _, tc := range []struct {
		name, file, content, want string
		args                      []string
	}{
		{"zone-less timestamp", "a.csv", head + "2026-11-02T13:00:00,HOURLY,c1,1,s\n", "a.csv:2: timestamp \"2026-11-02T13:00:00\": no time zone", nil},
		{"not a timestamp", "a.csv", head + "yesterday,HOURLY,c1,1,s\n", "a.csv:2: timestamp \"yesterday\": not RFC 3339", nil},
		{"future", "a.csv", head + "2099-01-01T00:00:00Z,HOURLY,c1,1,s\n", "a.csv:2: timestamp 2099-01-01T00:00:00Z is in the future", nil},
		{"granularity", "a.csv", head + ts(1) + ",WEEKLY,c1,1,s\n", "a.csv:2: granularity \"WEEKLY\": must be HOURLY or DAILY", nil},
		{"empty element", "a.csv", head + ts(1) + ",HOURLY,,1,s\n", "a.csv:2: empty element_name", nil},
		{"negative", "a.csv", head + ts(1) + ",HOURLY,c1,-3,s\n", "a.csv:2: value -3 is not > 0", nil},
		{"zero", "a.csv", head + ts(1) + ",HOURLY,c1,0,s\n", "a.csv:2: value 0 is not > 0", nil},
		{"NaN", "a.csv", head + ts(1) + ",HOURLY,c1,NaN,s\n", "a.csv:2: value NaN is not a finite number", nil},
		{"not a number", "a.csv", head + ts(1) + ",HOURLY,c1,12 units,s\n", "a.csv:2: value \"12 units\": not a number", nil},
		{"out of range", "a.csv", head + ts(1) + ",HOURLY,c1,1e64,s\n", "a.csv:2: value 1e+64 does not fit", nil},
		{"empty filter cell", "a.csv", head + ts(1) + ",HOURLY,c1,1,\n", "a.csv:2: filter \"custom:feature\" has no value", nil},
		{"too many values", "a.csv", head + ts(1) + ",HOURLY,c1,1," + many(21) + "\n", "a.csv:2: more than 20 values for a filter key", nil},
		{"too many keys", "a.csv", "timestamp,granularity,element_name,value,a,b,c,d,e,f\n" + ts(1) + ",HOURLY,c1,1,1,2,3,4,5,6\n", "a.csv:2: more than 5 filter keys", nil},
		{"record too large", "a.csv", head + ts(1) + ",HOURLY," + long + ",1,s\n", "a.csv:2: encoded record larger than 10000 bytes", nil},
		{"missing column", "a.csv", "timestamp,element_name,value\n" + ts(1) + ",c1,1\n", "a.csv:1: the header has no \"granularity\" column", nil},
		{"field count", "a.csv", head + ts(1) + ",HOURLY,c1,1,s,extra\n", "a.csv:2: record on line 2: wrong number of fields", nil},
		{"granularities differ", "a.csv", head + ts(1) + ",HOURLY,c1,1,s\n" + ts(1)[:10] + ",DAILY,c1,1,s\n", "a.csv:3: granularity DAILY differs from HOURLY at a.csv:2", nil},
		{"filter keys differ", "a.jsonl", `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"c1","value":1}` + "\n" +
			`{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"c2","filter":{"tag:env":["prod"]},"value":1}` + "\n",
			"a.jsonl:2: filter keys [tag:env] differ from [] at a.jsonl:1", nil},
		{"unknown field", "a.jsonl", `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element-name":"c1","value":1}` + "\n", "a.jsonl:1: not a JSON record: json: unknown field \"element-name\"", nil},
		{"missing value", "a.json", "{\"records\": [\n{\"timestamp\":\"" + ts(1) + "\",\"granularity\":\"HOURLY\",\"element_name\":\"c1\"},\n" +
			"{\"timestamp\":\"" + ts(1) + "\",\"granularity\":\"HOURLY\",\"element_name\":\"c1\"}]}", "a.json:3: value is missing", nil},
		{"bad stream name", "a.csv", head + ts(1) + ",HOURLY,c1,1,s\n", "a.csv:2: stream name \"bad/name\": must match", []string{"--stream", "bad/name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			em := startEmulator(t, emulator.Config{})
			dir := t.TempDir()
			f := filepath.Join(dir, tc.file)
			require.NoError(t, os.WriteFile(f, []byte(tc.content), 0o600))
			args := tc.args
			if args == nil {
				args = []string{"--stream", "s"}
			}
			r := cz(t, ctx, sendArgs(em, append(append([]string{"send"}, args...), "--yes", f)...)...)
			assert.Equal(t, exitUsage, r.code)
			assert.Contains(t, strings.ReplaceAll(r.stderr, dir+"/", ""), tc.want)
			assert.Contains(t, r.stderr, "nothing was sent")
			assert.Empty(t, em.Ledger().RequestsByStatus, "nothing reached CloudZero")
		})
	}
}

// bigCSV is n records of one stream over n/10 elements and 10 hours.
func bigCSV(n int, value string) string {
	var b strings.Builder
	b.WriteString("timestamp,granularity,element_name,value\n")
	for i := range n {
		fmt.Fprintf(&b, "%s,HOURLY,c%03d,%s\n", ts(i%10), i/10, value)
	}
	return b.String()
}

// A storm of 429s (with Retry-After) and 503s, some 503s applied: replace
// loses nothing and doubles nothing; sum (without applied faults, which
// would double it by design) too. Requests of 100 records, 1,000 records.
func TestSendThroughAStorm(t *testing.T) {
	ctx := context.Background()
	one := 1
	for _, tc := range []struct {
		op     string
		faults []emulator.FaultStep
	}{
		{"replace", []emulator.FaultStep{{Count: 3, Status: 503}, {Count: 2, Status: 429, RetryAfterSeconds: &one}, {Count: 1}, {Count: 3, Status: 503, Apply: true}, {Count: 1, Status: 502}}},
		{"sum", []emulator.FaultStep{{Count: 3, Status: 503}, {Count: 2, Status: 429, RetryAfterSeconds: &one}, {Count: 1}, {Count: 2, Status: 503}, {Count: 1, Status: 502}}},
	} {
		t.Run(tc.op, func(t *testing.T) {
			em := startEmulator(t, emulator.Config{Faults: emulator.FaultConfig{Steps: tc.faults}})
			f := write(t, "big.csv", bigCSV(1000, "1.5"))
			r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--op", tc.op, "--max-records-per-request", "100", "--yes", f)...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Contains(t, r.stdout, "applied 1000 records, refused 0, not sent 0")
			l := em.Ledger()
			require.Len(t, l.Streams, 1)
			assert.Equal(t, "1500", l.Streams[0].Total)
			assert.Len(t, l.Streams[0].Entries, 1000)
			for _, e := range l.Streams[0].Entries {
				require.Equal(t, "1.5", e.Value, "%+v", e)
			}
			assert.EqualValues(t, 10, l.RequestsByStatus["200"], "ten requests of 100 records accepted")
			assert.Contains(t, r.stderr, "settled", "progress lines")
		})
	}
}

// An interrupted send --op replace (CloudZero stops answering part way;
// the run gives up) is partly applied (exit 3, listed), and running the
// same command again gives the ledger of one clean run.
func TestInterruptedReplaceRunsAgainExactly(t *testing.T) {
	ctx := context.Background()
	f := write(t, "big.csv", bigCSV(500, "2"))
	clean := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(clean, "send", "--stream", "s", "--max-records-per-request", "100", "--yes", f)...)
	require.Equal(t, exitOK, r.code, r.stderr)

	em := startEmulator(t, emulator.Config{Faults: emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 2}, {Count: 1000, Status: 503}}}})
	r = cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--max-records-per-request", "100", "--give-up-after", "1s", "--yes", f)...)
	assert.Equal(t, exitPartial, r.code, r.stderr)
	assert.Contains(t, r.stdout, "applied 200 records, refused 0, not sent 300")
	assert.Regexp(t, `s\s+replace\s+\S+\s+\d+\s+0\s+\d+`, r.stdout, "per bucket: applied, refused, not sent")
	assert.Contains(t, r.stderr, "stopped before everything was settled")

	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{}))
	r = cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--max-records-per-request", "100", "--yes", f)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, entries(clean), entries(em))
	assert.Equal(t, "1000", em.Ledger().Streams[0].Total)
}

// Exit statuses 2 and 3: CloudZero refuses everything (a bad key), or
// some records (a filter key the stream does not have: refused alone by
// bisection, the rest applied).
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("bad key: nothing applied", func(t *testing.T) {
		em := startEmulator(t, emulator.Config{})
		keyFile := write(t, "key", "not-the-key\n")
		r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--api-key-file", keyFile, "--yes", write(t, "a.csv", csvInput))...)
		assert.Equal(t, exitNone, r.code, r.stderr)
		assert.Contains(t, r.stdout, "applied 0 records, refused 2, not sent 0")
		assert.Contains(t, r.stderr, "403")
		assert.NotContains(t, r.stdout+r.stderr, "not-the-key")
	})
	t.Run("some records refused: partly applied", func(t *testing.T) {
		em := startEmulator(t, emulator.Config{})
		r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", csvInput))...)
		require.Equal(t, exitOK, r.code, r.stderr)
		// A second stream refuses a record whose key set differs from the stream's.
		bad := "{\"timestamp\":\"" + ts(3) + "\",\"granularity\":\"HOURLY\",\"element_name\":\"c9\",\"filter\":{\"custom:feature\":[\"x\"]},\"value\":1}\n"
		require.Equal(t, exitOK, cz(t, ctx, sendArgs(em, "send", "--stream", "t", "--yes", write(t, "t.jsonl", bad))...).code)
		mixed := "{\"timestamp\":\"" + ts(4) + "\",\"granularity\":\"HOURLY\",\"element_name\":\"c1\",\"filter\":{\"custom:feature\":[\"x\"]},\"value\":1}\n" +
			"{\"timestamp\":\"" + ts(4) + "\",\"granularity\":\"DAILY\",\"element_name\":\"c1\",\"filter\":{\"custom:feature\":[\"x\"]},\"value\":1}\n"
		// DAILY on an HOURLY stream: the input check catches it first.
		r = cz(t, ctx, sendArgs(em, "send", "--stream", "t", "--yes", write(t, "m.jsonl", mixed))...)
		require.Equal(t, exitUsage, r.code)
		// A stream CloudZero knows as HOURLY, sent DAILY records beside HOURLY ones of another run: refused by CloudZero.
		daily := "timestamp,granularity,element_name,value,custom:feature\n" + ts(5)[:10] + ",DAILY,c1,1,x\n"
		r = cz(t, ctx, sendArgs(em, "send", "--stream", "t", "--yes", write(t, "d.csv", daily))...)
		assert.Equal(t, exitNone, r.code, r.stderr)
		assert.Contains(t, r.stderr, "400")
	})
}

// delete: a dry run deletes nothing; --yes deletes the range bucket by
// bucket, narrowed by --element and --filter, through a 503/429 storm;
// a stream CloudZero does not have is refused (exit 2).
func TestDelete(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(100, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "100", em.Ledger().Streams[0].Total)

	from, to := ts(4), hourAgo.Add(-time.Hour).Format(time.RFC3339) // buckets -4h..-2h: three of the ten
	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", from, "--to", to)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "delete: stream s, 3 HOURLY buckets from "+from)
	assert.Contains(t, r.stdout, "dry run: nothing was deleted")
	assert.Equal(t, "100", em.Ledger().Streams[0].Total)

	one := 1
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 2, Status: 503}, {Count: 1, Status: 429, RetryAfterSeconds: &one}}}))
	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", from, "--to", to, "--element", "c000", "--yes")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "deleted 3 of 3 buckets")
	assert.Contains(t, r.stderr, "retrying")
	assert.Equal(t, "97", em.Ledger().Streams[0].Total, "c000's records of three buckets")

	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", from, "--to", to, "--yes")...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "70", em.Ledger().Streams[0].Total, "every record of three buckets")

	r = cz(t, ctx, sendArgs(em, "delete", "--stream", "nope", "--from", from, "--to", to, "--yes")...)
	assert.Equal(t, exitNone, r.code, r.stderr)
	assert.Contains(t, r.stderr, "refused (3 buckets")

	for _, bad := range [][]string{
		{"--stream", "s", "--from", to, "--to", from},
		{"--stream", "s", "--from", "yesterday", "--to", to},
		{"--stream", "s", "--from", from, "--to", to, "--filter", "novalue"},
		{"--stream", "s", "--from", from, "--to", to, "--granularity", "WEEKLY"},
		{"--from", from, "--to", to},
	} {
		r = cz(t, ctx, sendArgs(em, append([]string{"delete"}, bad...)...)...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", bad, r.stderr)
	}
}

// replay sends a dry_run_file as the exporter would have: sum lines add,
// a replace line sets the total, a later sum adds to it.
func TestReplay(t *testing.T) {
	ctx := context.Background()
	rec := func(el, v string) string {
		return `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"` + el + `","value":"` + v + `"}`
	}
	file := write(t, "dry.jsonl", strings.Join([]string{
		`s sum {"records":[` + rec("a", "1") + `,` + rec("b", "2") + `]}`,
		`s sum {"records":[` + rec("a", "3") + `]}`,
		`t replace {"records":[` + rec("a", "5") + `]}`,
		`t replace {"records":[` + rec("a", "7") + `,` + rec("b", "1") + `]}`,
		`t sum {"records":[` + rec("b", "0.5") + `]}`,
		`s {"records":[` + rec("c", "4") + `]}`, // written before the operation was: sum
	}, "\n")+"\n")
	em := startEmulator(t, emulator.Config{})
	require.NoError(t, em.Server.SetFaults(emulator.FaultConfig{Steps: []emulator.FaultStep{{Count: 1, Status: 503}}}))
	r := cz(t, ctx, sendArgs(em, "replay", file)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `s\s+sum\s+3\s`, r.stdout)
	assert.Regexp(t, `t\s+replace\s+2\s`, r.stdout)
	assert.Empty(t, entries(em))
	r = cz(t, ctx, sendArgs(em, "replay", "--yes", file)...)
	require.Equal(t, exitOK, r.code, r.stderr)
	want := map[string]string{
		"s a " + ts(1) + " map[]": "4", "s b " + ts(1) + " map[]": "2", "s c " + ts(1) + " map[]": "4",
		"t a " + ts(1) + " map[]": "7", "t b " + ts(1) + " map[]": "1.5",
	}
	assert.Equal(t, want, entries(em))

	bad := write(t, "bad.jsonl", "s delete {\"records\":[]}\ns sum {not json\n")
	r = cz(t, ctx, sendArgs(em, "replay", "--yes", bad)...)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "bad.jsonl:1: operation \"delete\"")
	assert.Contains(t, r.stderr, "bad.jsonl:2: not a request body")
}

const previewConfig = `
exporters:
  cloudzero:
    endpoint: http://127.0.0.1:1
    api_key: ${env:NO_SUCH_VARIABLE_FOR_THE_TEST}
    streams:
      - name: requests
        metrics: [app.requests]
        element_name: customer.id
        filter:
          custom:feature: feature
  debug: {}
`

// OTLP JSON as the file exporter writes it: one export per line.
func otlpLine(at time.Time, points ...[3]string) string {
	var dps []string
	for _, p := range points {
		dps = append(dps, `{"attributes":[{"key":"customer.id","value":{"stringValue":"`+p[0]+`"}}`+p[1]+`],"startTimeUnixNano":"`+
			fmt.Sprint(at.Add(-time.Minute).UnixNano())+`","timeUnixNano":"`+fmt.Sprint(at.UnixNano())+`","asInt":"`+p[2]+`"}`)
	}
	return `{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{},"metrics":[{"name":"app.requests","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[` +
		strings.Join(dps, ",") + `]}}]}]}]}`
}

// preview prints exactly the exporter's records for a file of OTLP JSON,
// and every drop with its reason; validate reports each problem.
func TestPreviewAndValidate(t *testing.T) {
	ctx := context.Background()
	config := write(t, "collector.yaml", previewConfig)
	feature := func(f string) string { return `,{"key":"feature","value":{"stringValue":"` + f + `"}}` }
	at := hourAgo.Add(10 * time.Minute)
	metrics := write(t, "metrics.jsonl", otlpLine(at, [3]string{"c1", feature("search"), "3"}, [3]string{"c2", feature("export"), "4"})+"\n"+
		otlpLine(at.Add(time.Minute), [3]string{"c1", feature("search"), "5"}, [3]string{"c3", "", "9"})+"\n")

	r := cz(t, ctx, "preview", "--config", config, metrics)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `requests\s+`+hourAgo.Format(time.RFC3339)+`\s+HOURLY\s+c1\s+custom:feature=search\s+8\n`, r.stdout)
	assert.Regexp(t, `requests\s+\S+\s+HOURLY\s+c2\s+custom:feature=export\s+4\n`, r.stdout)
	assert.Contains(t, r.stdout, "2 records from 4 data points (0 feed no stream)")
	assert.Contains(t, r.stdout, "dropped 1 data points: missing_filter_value")

	r = cz(t, ctx, "preview", "--config", config, "--output", "json", metrics)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"datapoints_dropped": {`+"\n"+`    "missing_filter_value": 1`)
	assert.Contains(t, r.stdout, `"element_name": "c1"`)

	r = cz(t, ctx, "validate", "--config", config)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stdout, "cloudzero: ")
	assert.Contains(t, r.stdout, "api_key")

	good := write(t, "good.yaml", strings.Replace(previewConfig, "${env:NO_SUCH_VARIABLE_FOR_THE_TEST}", "k", 1))
	r = cz(t, ctx, "validate", "--config", good)
	assert.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	assert.Equal(t, "cloudzero: ok\n", r.stdout)

	replace := write(t, "replace.yaml", strings.Replace(previewConfig, "${env:NO_SUCH_VARIABLE_FOR_THE_TEST}", "k\n    delivery: replace\n    storage: file_storage", 1))
	r = cz(t, ctx, "validate", "--config", replace)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stdout, `storage: extension "file_storage" is not declared under extensions:`)

	typo := write(t, "typo.yaml", strings.Replace(previewConfig, "element_name:", "element:", 1))
	r = cz(t, ctx, "validate", "--config", typo)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stdout+r.stderr, "element")
}

// Every command has --help with an example; unknown commands and flags
// are usage errors.
func TestHelp(t *testing.T) {
	ctx := context.Background()
	for _, c := range commands {
		r := cz(t, ctx, c.name, "--help")
		assert.Equal(t, exitOK, r.code, c.name)
		assert.Contains(t, r.stderr, "Usage: cloudzero "+c.name, c.name)
		assert.Contains(t, r.stderr, "Example:\n  ", c.name)
		assert.Contains(t, r.stderr, "cloudzero "+c.name+" ", c.name)
	}
	assert.Equal(t, exitUsage, cz(t, ctx, "frobnicate").code)
	assert.Equal(t, exitUsage, cz(t, ctx, "send", "--no-such-flag").code)
	assert.Equal(t, exitUsage, cz(t, ctx, "send", "--stream", "s", "--yes", "--dry-run", "x.csv").code)
	assert.Equal(t, exitUsage, cz(t, ctx).code)
	r := cz(t, ctx, "help")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stderr, "Exit status: 0 done, 1 usage or validation error, 2 nothing applied, 3 partly applied.")
}
