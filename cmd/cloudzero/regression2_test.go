package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// Regressions from the second hostile review of the fixes (50c1c77, 09d7c86,
// 814ee7b): each test failed before its fix.

// czTerm is czl on a terminal (a progress bar instead of lines).
func czTerm(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	return runCommand(t, ctx, true, args)
}

// On a terminal the final progress bar is written as "\r...bar" and then
// a separate "\n" (startProgress: Fprintf then Fprintln). syncWriter sees
// a write that does not start with '\r' while midLine and puts its own
// newline first: every run ends its bar with an empty line.
func TestTerminalBarEndsWithOneNewline(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := czl(t, ctx, sendArgs(em, "send", "--stream", "s", "--yes", write(t, "a.csv", bigCSV(5, "1")))...)
	require.Equal(t, exitOK, r.code, r.stderr)

	r = czTerm(t, ctx, sendArgs(em, "delete", "--stream", "s", "--from", ts(4), "--to", hourAgo.Add(time.Hour).Format(time.RFC3339), "--yes")...)
	require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%q", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "5/5")
	assert.NotContains(t, r.stderr, "5/5\n\n", "an empty line after the progress bar: %q", r.stderr)
}

// openInput strips a UTF-8 byte order mark from every input file (finding
// 15), and a key file's surrounding whitespace is trimmed (finding 5), but
// a key file saved with a BOM (Windows editors, PowerShell's
// Out-File -Encoding utf8) keeps it: U+FEFF is not unicode.IsSpace, so
// checkKey accepts it, the key is sent with three extra bytes, and every
// request is refused (403): exit 2 "CloudZero refused it", with nothing
// pointing at the file.
func TestKeyFileWithBOM(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	keyFile := write(t, "key", "\ufeff"+testKey+"\r\n")
	var out, errb lockedBuffer
	code := run(ctx, append(sendArgs(em, "send", "--stream", "s", "--api-key-file", keyFile, "--give-up-after", "5s", "--yes"), write(t, "a.csv", csvInput)),
		env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now})
	t.Logf("code %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	assert.Contains(t, []int{exitOK, exitUsage}, code, "a BOM before the key: stripped (exit 0), or a usage error naming it; not CloudZero's 403")
	assert.Zero(t, em.Ledger().RequestsByStatus["403"], "the key was sent with the byte order mark")
}

// "report every bad line with its number before anything is sent" (issue
// 10, README "every bad line is reported"): a bare filter key prefix is
// reported once per key for the whole run (badKeys), meant for a CSV
// column, but in JSON lines each record has its own filter: a second
// record with the bad key, on another line, is skipped without a word.
func TestBareKeyReportedOnEveryJSONLine(t *testing.T) {
	ctx := context.Background()
	line := func(el string) string {
		return `{"timestamp":"` + ts(1) + `","granularity":"HOURLY","element_name":"` + el + `","filter":{"custom:":["a"]},"value":1}` + "\n"
	}
	r := cz(t, ctx, "send", "--stream", "s", write(t, "a.jsonl", line("c1")+line("c2")+line("c3")))
	require.Equal(t, exitUsage, r.code, r.stdout)
	t.Logf("stderr:\n%s", r.stderr)
	for _, want := range []string{"a.jsonl:1:", "a.jsonl:2:", "a.jsonl:3:"} {
		assert.Contains(t, r.stderr, want)
	}
}

// send with more records than --records-per-day could only wait for the
// next day's budget until --give-up-after (15 minutes): like delete, it is
// a usage error before anything is sent. A key with a control character
// would be refused by HTTP as if the failure were transient: a usage error.
func TestSendBeyondDailyBudgetAndOddKeysAreUsageErrors(t *testing.T) {
	ctx := context.Background()
	em := startEmulator(t, emulator.Config{})
	r := cz(t, ctx, sendArgs(em, "send", "--stream", "s", "--records-per-day", "5", "--give-up-after", "3s", "--yes", write(t, "a.csv", bigCSV(10, "1")))...)
	assert.Equal(t, exitUsage, r.code, r.stderr)
	assert.Contains(t, r.stderr, "more than --records-per-day 5")

	keyFile := write(t, "key", testKey+"\x7f\n")
	var out, errb lockedBuffer
	code := run(ctx, append(sendArgs(em, "send", "--stream", "s", "--api-key-file", keyFile, "--yes"), write(t, "b.csv", csvInput)),
		env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now})
	assert.Equal(t, exitUsage, code, errb.String())
	assert.Contains(t, errb.String(), "not printable ASCII")
	assert.NotContains(t, errb.String(), testKey)
	assert.Zero(t, em.Ledger().RequestsByStatus["201"]+em.Ledger().RequestsByStatus["200"], "nothing was sent")
}
