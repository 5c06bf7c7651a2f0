package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Paths of the login part of the wire contract.
const (
	pathChallenges     = "/api/v1/device/challenges"
	pathChallengeClaim = "/api/v1/device/challenges/claim"
)

// Decisions and user-verification methods of a decision JWS.
const (
	decisionApprove = "approve"
	decisionDeny    = "deny"
	decisionFraud   = "fraud"
)

var uvMethods = []string{"pin", "fingerprint", "face"}

// maxNumberLen bounds --number before the challenge's number_digits is known.
const maxNumberLen = 16

// challenge is the challenge object of GET /api/v1/device/challenges/{id}
// (and of the list and the QR claim).
type challenge struct {
	ChallengeID    string  `json:"challenge_id"`
	ClientName     string  `json:"client_name"`
	BindingMessage *string `json:"binding_message"` // null when the IdP sent none
	CreatedAt      string  `json:"created_at"`
	ExpiresAt      string  `json:"expires_at"`
	Nonce          string  `json:"nonce"`
	NumberDigits   int     `json:"number_digits"` // 0: no number to type (an approval carries none)
}

// decisionClaims is the payload of the decision JWS (typ ecps-decision+jwt).
type decisionClaims struct {
	ChallengeID string `json:"challenge_id"`
	Nonce       string `json:"nonce"`
	Decision    string `json:"decision"`
	Number      string `json:"number,omitempty"` // approve only, when number_digits > 0
	UV          string `json:"uv"`
	Iat         int64  `json:"iat"`
}

type decisionBody struct {
	Response string `json:"response"`
}

type claimBody struct {
	QRToken string `json:"qr_token"`
}

// decisionJWS signs a decision with the device key; kid is the device id.
func decisionJWS(c *client, claims decisionClaims) (string, error) {
	return signJWS(c.key, typDecision, c.deviceID, claims)
}

// checkChallenge rejects a challenge object the phone could not answer
// safely: its id goes into a request path, its nonce into the decision.
func checkChallenge(ch *challenge) error {
	if err := checkActivationID(ch.ChallengeID); err != nil { // URL-unreserved, as every id
		return fmt.Errorf("malformed challenge: challenge_id: %v", err)
	}
	if ch.Nonce == "" {
		return fmt.Errorf("malformed challenge %s: no nonce", ch.ChallengeID)
	}
	return nil
}

// challengeError explains the statuses of a challenge request that the user
// can act on; other errors keep the server's code and description.
func challengeError(id string, err error) error {
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusConflict:
			return fmt.Errorf("challenge %s: already decided or cancelled (HTTP 409)", id)
		case http.StatusGone:
			return fmt.Errorf("challenge %s: expired (HTTP 410)", id)
		}
	}
	return err
}

// getChallenge reads one challenge; id has been checked by the caller.
func getChallenge(ctx context.Context, c *client, id string) (*challenge, []byte, error) {
	resp, data, err := c.deviceRequest(ctx, http.MethodGet, pathChallenges+"/"+id, nil)
	if err != nil {
		return nil, nil, challengeError(id, err)
	}
	if err := expectStatus(resp, http.StatusOK); err != nil {
		return nil, nil, err
	}
	var ch challenge
	if err := json.Unmarshal(data, &ch); err != nil {
		return nil, nil, fmt.Errorf("malformed challenge: %v", err)
	}
	if err := checkChallenge(&ch); err != nil {
		return nil, nil, err
	}
	if ch.ChallengeID != id {
		return nil, nil, fmt.Errorf("asked for challenge %s, the server answered challenge %s", id, ch.ChallengeID)
	}
	return &ch, data, nil
}

// listChallenges reads the pending challenges of the practitioner.
func listChallenges(ctx context.Context, c *client) ([]challenge, []byte, *http.Response, error) {
	resp, data, err := c.deviceRequest(ctx, http.MethodGet, pathChallenges, nil)
	if err != nil {
		return nil, nil, resp, err
	}
	if err := expectStatus(resp, http.StatusOK); err != nil {
		return nil, nil, resp, err
	}
	var list struct {
		Challenges []challenge `json:"challenges"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, nil, resp, fmt.Errorf("malformed challenge list: %v", err)
	}
	return list.Challenges, data, resp, nil
}

// sendDecision signs the decision and posts it; the server answers 204.
func sendDecision(ctx context.Context, c *client, ch *challenge, decision, number, uv string) error {
	claims := decisionClaims{
		ChallengeID: ch.ChallengeID,
		Nonce:       ch.Nonce,
		Decision:    decision,
		UV:          uv,
		Iat:         c.now().Unix(),
	}
	if decision == decisionApprove && ch.NumberDigits > 0 {
		claims.Number = number
	}
	tok, err := decisionJWS(c, claims)
	if err != nil {
		return fmt.Errorf("sign decision: %w", err)
	}
	resp, _, err := c.deviceRequest(ctx, http.MethodPost, pathChallenges+"/"+ch.ChallengeID+"/response", decisionBody{Response: tok})
	if err != nil {
		return challengeError(ch.ChallengeID, err)
	}
	return expectStatus(resp, http.StatusNoContent)
}

// checkNumber accepts the typed verification number: digits only (leading
// zeros kept). With the challenge known (digits > 0), its length must be
// number_digits: the service shows exactly that many digits.
func checkNumber(n string, digits int) error {
	if n == "" {
		return errors.New("the number is empty")
	}
	if len(n) > maxNumberLen {
		return errors.New("the number is too long")
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return errors.New("the number must be digits only")
		}
	}
	if digits > 0 && len(n) != digits {
		return fmt.Errorf("the service shows a %d-digit number, got %d digits", digits, len(n))
	}
	return nil
}

func checkUV(uv string) error {
	for _, m := range uvMethods {
		if uv == m {
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(uvMethods, ", "))
}

// expiresIn describes expires_at relative to now.
func expiresIn(expiresAt string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, expiresAt)
	if err != nil {
		return "at " + dash(clean(expiresAt))
	}
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return fmt.Sprintf("expired %d s ago", int64(-d/time.Second))
	}
	return fmt.Sprintf("in %d s", int64(d/time.Second))
}

func bindingMessage(ch *challenge) string {
	if ch.BindingMessage == nil || *ch.BindingMessage == "" {
		return "-"
	}
	return clean(*ch.BindingMessage)
}

func numberHint(digits int) string {
	if digits <= 0 {
		return "no number to type: check that the binding message is the one the service shows, then approve or deny"
	}
	return fmt.Sprintf("type the %d-digit number shown by the service", digits)
}

// answerHint tells how to answer a challenge from the command line.
func answerHint(ch *challenge) string {
	if ch.NumberDigits <= 0 {
		return fmt.Sprintf("to answer: ecps-device approve %s (or deny %s, fraud %s)", ch.ChallengeID, ch.ChallengeID, ch.ChallengeID)
	}
	return fmt.Sprintf("to answer: ecps-device approve %s --number NN (or deny %s, fraud %s)", ch.ChallengeID, ch.ChallengeID, ch.ChallengeID)
}

// errNoNumber: a number given for a challenge that has none to type.
var errNoNumber = errors.New("this challenge has no number to type (number_digits 0): approve it without -number")

// printChallenge shows one challenge for a human; all server text is cleaned.
func printChallenge(w io.Writer, ch *challenge, now time.Time) {
	fmt.Fprintf(w, "challenge:       %s\n", clean(ch.ChallengeID))
	fmt.Fprintf(w, "client:          %s\n", dash(clean(ch.ClientName)))
	fmt.Fprintf(w, "binding message: %s\n", bindingMessage(ch))
	fmt.Fprintf(w, "created at:      %s\n", dash(clean(ch.CreatedAt)))
	fmt.Fprintf(w, "expires:         %s\n", expiresIn(ch.ExpiresAt, now))
	fmt.Fprintf(w, "%s\n", numberHint(ch.NumberDigits))
}

// writeRaw prints a server answer as is, ending with a newline.
func (a *app) writeRaw(data []byte) {
	a.stdout.Write(data)
	if len(data) == 0 || data[len(data)-1] != '\n' {
		fmt.Fprintln(a.stdout)
	}
}

func cmdChallenges(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("challenges", "[-json]")
	asJSON := fs.Bool("json", false, "print the server's JSON answer as is")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 0 {
		return a.usageError(fs, "challenges takes no argument")
	}
	c, _, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	list, data, _, err := listChallenges(ctx, c)
	if err != nil {
		return a.fail(err)
	}
	if *asJSON {
		a.writeRaw(data)
		return exitOK
	}
	if len(list) == 0 {
		fmt.Fprintln(a.stdout, "no pending challenge")
		return exitOK
	}
	now := time.Now()
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHALLENGE_ID\tCLIENT\tBINDING_MESSAGE\tDIGITS\tEXPIRES\tCREATED_AT")
	for i := range list {
		ch := &list[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", dash(clean(ch.ChallengeID)), dash(clean(ch.ClientName)),
			bindingMessage(ch), ch.NumberDigits, expiresIn(ch.ExpiresAt, now), dash(clean(ch.CreatedAt)))
	}
	if err := tw.Flush(); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// challengeIDArg checks the one positional argument of show/approve/deny/fraud.
func (a *app) challengeIDArg(fs *flag.FlagSet, name string, pos []string) (string, int) {
	if len(pos) != 1 {
		return "", a.usageError(fs, "%s takes one challenge id", name)
	}
	if err := checkActivationID(pos[0]); err != nil {
		return "", a.usageError(fs, "challenge id: %v", err)
	}
	return pos[0], -1
}

func cmdShow(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("show", "CHALLENGE_ID [-json]")
	asJSON := fs.Bool("json", false, "print the server's JSON answer as is")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	id, rc := a.challengeIDArg(fs, "show", pos)
	if rc >= 0 {
		return rc
	}
	c, _, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	ch, data, err := getChallenge(ctx, c, id)
	if err != nil {
		return a.fail(err)
	}
	if *asJSON {
		a.writeRaw(data)
		return exitOK
	}
	printChallenge(a.stdout, ch, time.Now())
	return exitOK
}

func cmdApprove(ctx context.Context, a *app, args []string) int {
	return a.decideCommand(ctx, decisionApprove, args)
}

func cmdDeny(ctx context.Context, a *app, args []string) int {
	return a.decideCommand(ctx, decisionDeny, args)
}

func cmdFraud(ctx context.Context, a *app, args []string) int {
	return a.decideCommand(ctx, decisionFraud, args)
}

// decideCommand is approve, deny and fraud: read the challenge (for its
// nonce), then post the signed decision.
func (a *app) decideCommand(ctx context.Context, decision string, args []string) int {
	synopsis := "CHALLENGE_ID [-uv pin|fingerprint|face]"
	if decision == decisionApprove {
		synopsis = "CHALLENGE_ID [-number NN] [-uv pin|fingerprint|face]"
	}
	fs := a.newFlags(decision, synopsis)
	var number *string
	if decision == decisionApprove {
		number = fs.String("number", "", "the `number` shown by the service (digits, leading zeros kept); none when the challenge's number_digits is 0")
	}
	uv := fs.String("uv", "pin", "user verification done on the phone: pin, fingerprint or face")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	id, rc := a.challengeIDArg(fs, decision, pos)
	if rc >= 0 {
		return rc
	}
	if err := checkUV(*uv); err != nil {
		return a.usageError(fs, "-uv: %v", err)
	}
	var num string
	if number != nil && *number != "" {
		num = *number
		if err := checkNumber(num, 0); err != nil {
			return a.usageError(fs, "-number: %v", err)
		}
	}
	c, _, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	ch, _, err := getChallenge(ctx, c, id)
	if err != nil {
		return a.fail(err)
	}
	if decision == decisionApprove {
		switch {
		case ch.NumberDigits <= 0 && num != "":
			return a.usageError(fs, "-number: %v (nothing was sent)", errNoNumber)
		case ch.NumberDigits > 0 && num == "":
			return a.usageError(fs, "approve needs -number: the %d-digit number shown by the service (nothing was sent)", ch.NumberDigits)
		case ch.NumberDigits > 0:
			// A number of the wrong length can only be a typo; the server
			// would count it as a wrong number and deny the login.
			if err := checkNumber(num, ch.NumberDigits); err != nil {
				return a.usageError(fs, "-number: %v (nothing was sent)", err)
			}
		}
	}
	if err := sendDecision(ctx, c, ch, decision, num, *uv); err != nil {
		return a.fail(err)
	}
	fmt.Fprintln(a.stdout, decidedMessage(decision, id))
	return exitOK
}

func decidedMessage(decision, id string) string {
	switch decision {
	case decisionApprove:
		return "approved challenge " + id
	case decisionDeny:
		return "denied challenge " + id
	default:
		return "reported challenge " + id + " as fraud: the login is denied"
	}
}

func cmdClaim(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("claim", "'ecps://login?t=…&h=…' | - (read it from stdin)")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 1 {
		return a.usageError(fs, "claim takes one login URI")
	}
	uri := pos[0]
	if uri == "-" {
		line, err := bufio.NewReader(io.LimitReader(a.stdin, 8192)).ReadString('\n')
		if err != nil && err != io.EOF {
			return a.fail(fmt.Errorf("read login URI from stdin: %w", err))
		}
		uri = line
	}
	link, err := parseLoginURI(uri)
	if err != nil {
		return a.usageError(fs, "%v", err)
	}
	c, st, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	if !sameServer(link.Server, st.Server) {
		return a.fail(fmt.Errorf("this login is for the service %s, but this device is enrolled on %s: nothing was sent",
			clean(link.Server), clean(st.Server)))
	}
	resp, data, err := c.deviceRequest(ctx, http.MethodPost, pathChallengeClaim, claimBody{QRToken: link.Token})
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && ae.Code == "invalid_grant" {
			return a.fail(fmt.Errorf("%w: the QR code is unknown, used or expired; scan the current one", err))
		}
		return a.fail(err)
	}
	if err := expectStatus(resp, http.StatusOK); err != nil {
		return a.fail(err)
	}
	var ch challenge
	if err := json.Unmarshal(data, &ch); err != nil {
		return a.fail(fmt.Errorf("malformed challenge: %v", err))
	}
	if err := checkChallenge(&ch); err != nil {
		return a.fail(err)
	}
	printChallenge(a.stdout, &ch, time.Now())
	fmt.Fprintln(a.stdout, answerHint(&ch))
	return exitOK
}

// lineResult is one line read from stdin by watch.
type lineResult struct {
	line string
	ok   bool // false: end of input (or a read error)
}

const (
	watchPrompt         = "number shown by the service (empty to deny, 'f' to report fraud): "
	watchPromptNoNumber = "'y' to approve (empty to deny, 'f' to report fraud): "
)

func cmdWatch(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("watch", "[-interval 2s] [-once]")
	interval := fs.Duration("interval", 2*time.Second, "time between two polls")
	once := fs.Bool("once", false, "answer the challenges pending now, then exit")
	uv := fs.String("uv", "pin", "user verification to claim: pin, fingerprint or face")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 0 {
		return a.usageError(fs, "watch takes no argument")
	}
	if *interval < 100*time.Millisecond {
		return a.usageError(fs, "-interval must be at least 100ms")
	}
	if err := checkUV(*uv); err != nil {
		return a.usageError(fs, "-uv: %v", err)
	}
	c, st, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	if !*once {
		fmt.Fprintf(a.stderr, "watching the challenges of device %s every %s (Ctrl-C to stop)\n", clean(st.DeviceID), *interval)
	}

	// One line is read only when asked for, in a goroutine, so that a
	// cancelled context ends the wait even while stdin blocks.
	sc := bufio.NewScanner(a.stdin)
	readLine := func() (lineResult, bool) {
		ch := make(chan lineResult, 1)
		go func() {
			if sc.Scan() {
				ch <- lineResult{line: sc.Text(), ok: true}
				return
			}
			ch <- lineResult{}
		}()
		select {
		case r := <-ch:
			return r, true
		case <-ctx.Done():
			return lineResult{}, false
		}
	}

	seen := map[string]bool{}
	for {
		list, _, resp, err := listChallenges(ctx, c)
		if ctx.Err() != nil {
			return exitOK
		}
		wait := *interval
		if err != nil {
			if *once || fatalStatus(err) {
				return a.fail(err)
			}
			fmt.Fprintf(a.stderr, "error: %v (retrying)\n", err)
			if d := retryAfter(resp); d > wait {
				wait = d
			}
		}
		first := true
		for i := range list {
			ch := &list[i]
			if seen[ch.ChallengeID] {
				continue
			}
			seen[ch.ChallengeID] = true
			if err := checkChallenge(ch); err != nil {
				fmt.Fprintf(a.stderr, "error: %v (skipped)\n", err)
				continue
			}
			if !first {
				fmt.Fprintln(a.stdout)
			}
			first = false
			printChallenge(a.stdout, ch, time.Now())
			if ch.NumberDigits > 0 {
				fmt.Fprint(a.stdout, watchPrompt)
			} else {
				fmt.Fprint(a.stdout, watchPromptNoNumber)
			}
			r, alive := readLine()
			if !alive {
				fmt.Fprintln(a.stdout)
				return exitOK
			}
			if !r.ok {
				fmt.Fprintln(a.stdout)
				fmt.Fprintf(a.stderr, "end of input: challenge %s left unanswered\n", ch.ChallengeID)
				return exitOK
			}
			decision, number, err := parseWatchAnswer(r.line, ch.NumberDigits)
			if err != nil {
				fmt.Fprintf(a.stderr, "error: %v: challenge %s left unanswered (use approve, deny or fraud)\n", err, ch.ChallengeID)
				continue
			}
			if err := sendDecision(ctx, c, ch, decision, number, *uv); err != nil {
				if ctx.Err() != nil {
					return exitOK
				}
				if fatalStatus(err) {
					return a.fail(err)
				}
				fmt.Fprintf(a.stderr, "error: %v\n", err)
				continue
			}
			fmt.Fprintln(a.stdout, decidedMessage(decision, ch.ChallengeID))
		}
		if *once {
			if len(list) == 0 {
				fmt.Fprintln(a.stdout, "no pending challenge")
			}
			return exitOK
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return exitOK
		case <-t.C:
		}
	}
}

// parseWatchAnswer reads the user's answer to a challenge: digits approve
// with that number (y approves a challenge without a number, number_digits
// 0), an empty line denies, f reports fraud.
func parseWatchAnswer(line string, digits int) (decision, number string, err error) {
	s := strings.TrimSpace(line)
	switch {
	case s == "":
		return decisionDeny, "", nil
	case strings.EqualFold(s, "f"):
		return decisionFraud, "", nil
	case digits <= 0 && strings.EqualFold(s, "y"):
		return decisionApprove, "", nil
	case digits <= 0:
		return "", "", errors.New("this challenge has no number to type: answer y to approve")
	}
	if err := checkNumber(s, digits); err != nil {
		return "", "", err
	}
	return decisionApprove, s, nil
}

// fatalStatus reports errors that no retry can fix: the device is not (or no
// longer) accepted.
func fatalStatus(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden)
}

// retryAfter is the Retry-After delay (seconds form) of a 429 or 503, capped at 5 minutes.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After")))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, 5*time.Minute)
}
