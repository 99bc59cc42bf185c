// Command cloudzero fixes data in CloudZero's allocation telemetry from the
// shell: send records from files (sum or replace), delete a range of
// buckets, replay an exporter's dry_run_file, preview what the exporter
// would make of OTLP JSON metrics, and validate a collector config.
//
//	cloudzero send     --stream S [--op replace|sum] FILE...   records from JSON, JSON lines or CSV
//	cloudzero delete   --stream S --from T --to T [--granularity G] [--element E] [--filter k=v]...
//	cloudzero replay   FILE...                                  a dry_run_file, each line with its own operation
//	cloudzero preview  --config collector.yaml [--exporter cloudzero/name] FILE...
//	cloudzero validate --config collector.yaml [--exporter cloudzero/name]
//
// send, delete and replay are dry runs unless given --yes. The API key is
// read from CLOUDZERO_API_KEY or --api-key-file, never from a flag, and is
// never printed. Exit status: 0 done; 1 usage or validation error (nothing
// sent); 2 nothing applied (CloudZero refused it, or could not be reached
// in time); 3 partly applied (what was applied is listed).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
)

// Exit statuses.
const (
	exitOK       = 0
	exitUsage    = 1 // usage or validation error: nothing was sent
	exitNone     = 2 // nothing applied: refused by CloudZero, or not sent in time
	exitPartial  = 3 // partly applied
	defaultURL   = "https://api.cloudzero.com"
	keyEnv       = "CLOUDZERO_API_KEY"
	progressTick = 2 * time.Second // a plain progress line at most this often
)

// env is the command's world, replaced in tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	terminal       bool // stderr is a terminal: a progress bar instead of lines
	now            func() time.Time
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		terminal: isTerminal(os.Stderr), now: time.Now,
	})
	stop()
	os.Exit(code)
}

// syncWriter serialises writes to w. On a terminal, where the progress bar
// is a line without its newline ("\r..."), a message written meanwhile
// starts on a line of its own instead of running into the bar.
type syncWriter struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	midLine  bool // terminal: the last write did not end a line
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	if s.terminal && s.midLine && p[0] != '\r' && p[0] != '\n' { // the bar's own end of line is not doubled
		if _, err := io.WriteString(s.w, "\n"); err != nil {
			return 0, err
		}
	}
	n, err := s.w.Write(p)
	s.midLine = p[len(p)-1] != '\n'
	return n, err
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, e env) int
}

var commands = []command{
	{"send", "send records from JSON, JSON lines or CSV files (replace by default)", runSend},
	{"delete", "delete the records of a range of buckets", runDelete},
	{"replay", "send an exporter's dry_run_file as the exporter would have", runReplay},
	{"preview", "show the records the exporter would make of OTLP JSON metrics", runPreview},
	{"validate", "check a collector config's cloudzero exporters, offline", runValidate},
}

func run(ctx context.Context, args []string, e env) int {
	// The progress goroutine and the command's own goroutine (retry
	// messages, the delivery's log) both write to stderr.
	e.stderr = &syncWriter{w: e.stderr, terminal: e.terminal}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], e)
		}
	}
	fmt.Fprintf(e.stderr, "cloudzero: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cloudzero: fix data in CloudZero's allocation telemetry")
	fmt.Fprintln(w, "\nUsage: cloudzero COMMAND [flags] [FILE...]   (cloudzero COMMAND --help for its flags and an example)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nsend, delete and replay are dry runs unless given --yes. The API key comes from")
	fmt.Fprintln(w, keyEnv+" or --api-key-file and is never printed.")
	fmt.Fprintln(w, "Exit status: 0 done, 1 usage or validation error, 2 nothing applied, 3 partly applied.")
}

// newFlags returns a flag set whose --help prints the summary, the flags
// and an example.
func newFlags(name, synopsis, example string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: cloudzero %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
		fmt.Fprintf(e.stderr, "\nExample:\n%s\n", example)
	}
	return fs
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns those. -h gives exitOK.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, 0, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), 0, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// sendFlags are the flags of the commands that write to CloudZero.
type sendFlags struct {
	endpoint       string
	apiKeyFile     string
	yes            bool
	dryRun         bool
	perSecond      float64
	burst          int
	perDay         int
	perRequest     int
	timeout        time.Duration
	giveUpAfter    time.Duration
	retryInitial   time.Duration
	retryMax       time.Duration
	progressWriter io.Writer
}

// client is the API client of a run, named in its User-Agent.
func (sf sendFlags) client(key string) *czexporter.Client {
	c := czexporter.NewClient(&http.Client{Timeout: sf.timeout}, sf.endpoint, key)
	c.SetUserAgent(czexporter.UserAgent("cloudzero/" + czexporter.Version))
	return c
}

func (f *sendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoint, "endpoint", defaultURL, "CloudZero API base URL (or the local emulator's)")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "read the API key from this file (default: $"+keyEnv+")")
	fs.BoolVar(&f.yes, "yes", false, "apply: without it, nothing is sent (dry run)")
	fs.BoolVar(&f.dryRun, "dry-run", true, "show what would be sent, send nothing (the default; --yes applies)")
	fs.Float64Var(&f.perSecond, "records-per-second", 5000, "client-side rate limit, records per second (the exporter's default)")
	fs.IntVar(&f.burst, "burst", 300000, "rate limit burst, records")
	fs.IntVar(&f.perDay, "records-per-day", 1000000, "records per UTC day this run may send; 0 = no daily budget")
	fs.IntVar(&f.perRequest, "max-records-per-request", 5000, "records per request (1..10000; requests also stay under 5 MB)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "timeout of one HTTP request")
	fs.DurationVar(&f.giveUpAfter, "give-up-after", 15*time.Minute, "stop retrying after this long; what is not sent then is listed")
	fs.DurationVar(&f.retryInitial, "retry-initial-interval", time.Second, "first delay between retries (then ×1.5, up to --retry-max-interval; Retry-After is honoured)")
	fs.DurationVar(&f.retryMax, "retry-max-interval", 30*time.Second, "longest delay between retries")
}

// apply reports whether to send for real; a contradiction is a usage error.
func (f *sendFlags) apply(fs *flag.FlagSet, e env) (bool, bool) {
	explicitDryRun := false
	fs.Visit(func(fl *flag.Flag) { explicitDryRun = explicitDryRun || (fl.Name == "dry-run" && f.dryRun) })
	if f.yes && explicitDryRun {
		fmt.Fprintln(e.stderr, "cloudzero: --yes and --dry-run contradict each other")
		return false, false
	}
	if f.perRequest < 1 || f.perRequest > 10000 || f.perSecond <= 0 || f.burst < 1 || f.perDay < 0 || f.timeout <= 0 || f.giveUpAfter <= 0 || f.retryInitial <= 0 || f.retryMax < f.retryInitial {
		fmt.Fprintln(e.stderr, "cloudzero: --max-records-per-request must be 1..10000; rates, timeouts and intervals positive; --retry-max-interval at least --retry-initial-interval")
		return false, false
	}
	return f.yes, true
}

// apiKey reads the key: --api-key-file, else $CLOUDZERO_API_KEY. The
// error never contains the key, nor the file's name (a user may give the
// key itself where its file belongs). A key with whitespace inside (a file
// of two lines) is refused, as the exporter's config refuses it: it can
// never be sent, and would be retried until --give-up-after.
func (f *sendFlags) apiKey(e env) (string, error) {
	if f.apiKeyFile != "" {
		b, err := os.ReadFile(f.apiKeyFile)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is the flag's value: not repeated
			}
			return "", fmt.Errorf("--api-key-file: cannot read the file: %w (the value is not shown)", err)
		}
		return checkKey("--api-key-file: the file", string(bytes.TrimPrefix(b, utf8BOM)))
	}
	if strings.TrimSpace(e.getenv(keyEnv)) != "" {
		return checkKey("$"+keyEnv, e.getenv(keyEnv))
	}
	return "", errors.New("no API key: set " + keyEnv + " or --api-key-file (a key on the command line would land in the shell's history)")
}

// checkKey trims k and refuses it when empty or with whitespace inside.
func checkKey(from, k string) (string, error) {
	k = strings.TrimSpace(k)
	switch {
	case k == "":
		return "", fmt.Errorf("%s is empty", from)
	case strings.ContainsFunc(k, unicode.IsSpace):
		return "", fmt.Errorf("%s contains whitespace inside the key (more than one line?): it must hold the key alone (the key is not shown)", from)
	case strings.ContainsFunc(k, func(r rune) bool { return r < '!' || r > '~' }):
		// HTTP would refuse such a header, and the failure would look transient.
		return "", fmt.Errorf("%s contains characters that are not printable ASCII (the key is not shown)", from)
	}
	return k, nil
}
