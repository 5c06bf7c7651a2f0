// Command ecps-device is the reference phone client of the e-CPS service: it
// enrols a software device key and signs device requests exactly as the app
// does, using only the wire contract (HTTP, JSON, JOSE).
//
//	ecps-device [-state FILE] [-timeout D] COMMAND [ARGS]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the request failed or the server refused it
	exitUsage = 2 // bad command line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// app is what every command gets: the I/O streams and the global options.
type app struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	statePath string
	timeout   time.Duration
}

// command is one sub-command. To add one, write its func and list it in commands.
type command struct {
	name    string
	args    string // synopsis of its arguments, for the usage text
	summary string
	run     func(ctx context.Context, a *app, args []string) int
}

func commands() []command {
	return []command{
		{"enrol", "'ecps://enrol?a=…&s=…&h=…' | - (URI on stdin) | -code CODE -activation ID -server URL", "enrol a new device key", cmdEnrol},
		{"devices", "[-json]", "list the practitioner's devices", cmdDevices},
		{"remove", "DEVICE_ID", "revoke one of the practitioner's devices", cmdRemove},
		{"push-token", "TOKEN", "set this device's FCM push token", cmdPushToken},
		{"whoami", "[-json]", "show the enrolled device of the state file (never the key)", cmdWhoami},
		{"challenges", "[-json]", "list the practitioner's pending login challenges", cmdChallenges},
		{"show", "CHALLENGE_ID [-json]", "show one login challenge", cmdShow},
		{"approve", "CHALLENGE_ID [-number NN] [-uv pin|fingerprint|face]", "approve a login with the number shown by the service (none when number_digits is 0)", cmdApprove},
		{"deny", "CHALLENGE_ID [-uv pin|fingerprint|face]", "deny a login", cmdDeny},
		{"fraud", "CHALLENGE_ID [-uv pin|fingerprint|face]", "deny a login and report it as fraud (blocks new pushes for a while)", cmdFraud},
		{"claim", "'ecps://login?t=…&h=…' | - (URI on stdin)", "claim a QR login shown by the service, then approve it", cmdClaim},
		{"watch", "[-interval 2s] [-once] [-uv pin|fingerprint|face]", "poll for challenges and answer each one on the terminal", cmdWatch},
	}
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("ecps-device", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.statePath, "state", "", "state `file` (default $ECPS_DEVICE_STATE or $HOME/.config/ecps-device/state.json)")
	fs.DurationVar(&a.timeout, "timeout", 30*time.Second, "timeout of each HTTP request")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "error: %v\n", err)
		a.usage(stderr, fs)
		return exitUsage
	}
	if a.timeout <= 0 {
		fmt.Fprintln(stderr, "error: -timeout must be positive")
		return exitUsage
	}
	if a.statePath == "" {
		p, err := defaultStatePath(os.Getenv)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return exitUsage
		}
		a.statePath = p
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "error: no command")
		a.usage(stderr, fs)
		return exitUsage
	}
	if rest[0] == "help" {
		a.usage(stdout, fs)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == rest[0] {
			return c.run(ctx, a, rest[1:])
		}
	}
	fmt.Fprintf(stderr, "error: unknown command %q\n", clean(rest[0]))
	a.usage(stderr, fs)
	return exitUsage
}

func (a *app) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: ecps-device [-state FILE] [-timeout D] COMMAND [ARGS]")
	fmt.Fprintln(w, "\nglobal flags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n  %-11s   %s\n", c.name, c.summary, "", c.args)
	}
	fmt.Fprintln(w, "\nexit status: 0 ok, 1 error (request failed or refused), 2 bad usage")
}

// newFlags is the flag set of one command; its usage goes to stderr.
func (a *app) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "usage: ecps-device [-state FILE] %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses flags placed anywhere among positional arguments
// ("cmd ARG -flag x" as well as "cmd -flag x ARG"); "--" ends the flags.
// It returns the positional arguments and an exit code (-1 to go on).
func (a *app) parseFlags(fs *flag.FlagSet, args []string) ([]string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK
			}
			return nil, exitUsage // the flag package has printed the error and usage
		}
		left := fs.Args()
		if consumed := len(args) - len(left); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, left...), -1
		}
		if len(left) == 0 {
			return pos, -1
		}
		pos = append(pos, left[0])
		args = left[1:]
	}
}

// usageError prints a command-line error and the command's usage.
func (a *app) usageError(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(a.stderr, "error: "+format+"\n", args...)
	fs.Usage()
	return exitUsage
}

// fail prints a runtime error; a server error reads
// "error: <code>: <description> (HTTP <status>)".
func (a *app) fail(err error) int {
	fmt.Fprintf(a.stderr, "error: %v\n", err)
	return exitError
}

func (a *app) warn(msg string) {
	fmt.Fprintf(a.stderr, "warning: %s\n", msg)
}

// loadDevice loads the state file and returns a client signing as its device.
func (a *app) loadDevice() (*client, *deviceState, error) {
	st, err := loadState(a.statePath, a.warn)
	if err != nil {
		return nil, nil, err
	}
	return newDeviceClient(st, a.timeout), st, nil
}

// dash shows an empty value as "-".
func dash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}
