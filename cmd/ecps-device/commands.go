package main

import (
	"bufio"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Paths of the wire contract.
const (
	pathEnrollments = "/api/v1/enrollments"
	pathDevices     = "/api/v1/device/devices"
	pathPushToken   = "/api/v1/device/push-token"
)

type pushTokenBody struct {
	Provider string `json:"provider"`
	Token    string `json:"token"`
}

type enrolRequest struct {
	ActivationID string         `json:"activation_id"`
	Secret       string         `json:"secret,omitempty"`
	Code         string         `json:"code,omitempty"`
	PublicKey    ecJWK          `json:"public_key"`
	Proof        string         `json:"proof"`
	Platform     string         `json:"platform"`
	Model        string         `json:"model"`
	AppVersion   string         `json:"app_version"`
	Push         *pushTokenBody `json:"push,omitempty"`
}

type enrolResponse struct {
	DeviceID  string `json:"device_id"`
	Subject   string `json:"subject"`
	CreatedAt string `json:"created_at"`
}

// deviceInfo is a device object of GET /api/v1/device/devices.
type deviceInfo struct {
	DeviceID   string  `json:"device_id"`
	Subject    string  `json:"subject"`
	Status     string  `json:"status"`
	Platform   string  `json:"platform"`
	Model      string  `json:"model"`
	AppVersion string  `json:"app_version"`
	CreatedAt  string  `json:"created_at"`
	LastUsedAt *string `json:"last_used_at"`
	Push       bool    `json:"push"`
}

func cmdEnrol(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("enrol", "[flags] 'ecps://enrol?a=…&s=…&h=…' | - (read it from stdin)\n       ecps-device [-state FILE] enrol [flags] -code XXXX-XXXX-XX -activation ID -server URL")
	code := fs.String("code", "", "short activation `code` typed by the user, instead of a URI")
	activation := fs.String("activation", "", "activation `id` (with -code)")
	server := fs.String("server", "", "service base `URL` (with -code)")
	platform := fs.String("platform", "android", "device platform: android or ios")
	model := fs.String("model", "ecps-device", "device model sent to the server")
	appVersion := fs.String("app-version", "0.1.0", "app version sent to the server")
	pushToken := fs.String("push-token", "", "FCM `token` to register with the device (optional)")
	force := fs.Bool("force", false, "replace the device already saved in the state file")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}

	req := enrolRequest{Platform: *platform, Model: *model, AppVersion: *appVersion}
	var base string
	byCode := *code != "" || *activation != "" || *server != ""
	switch {
	case len(pos) > 1:
		return a.usageError(fs, "enrol takes one enrol URI")
	case len(pos) == 1 && byCode:
		return a.usageError(fs, "give either an enrol URI or -code, -activation and -server, not both")
	case len(pos) == 1:
		uri := pos[0]
		if uri == "-" { // from stdin: keeps the secret out of the process list
			line, err := bufio.NewReader(io.LimitReader(a.stdin, 8192)).ReadString('\n')
			if err != nil && err != io.EOF {
				return a.fail(fmt.Errorf("read enrol URI from stdin: %w", err))
			}
			uri = line
		}
		link, err := parseEnrolURI(uri)
		if err != nil {
			return a.usageError(fs, "%v", err)
		}
		req.ActivationID, req.Secret, base = link.ActivationID, link.Secret, link.Server
	case byCode:
		c := strings.TrimSpace(*code)
		if strings.Trim(c, "- ") == "" {
			return a.usageError(fs, "-code is missing or empty")
		}
		if err := checkActivationID(*activation); err != nil {
			return a.usageError(fs, "-activation: %v", err)
		}
		s, err := checkServerURL(*server)
		if err != nil {
			return a.usageError(fs, "-server: %v", err)
		}
		req.ActivationID, req.Code, base = *activation, c, s
	default:
		return a.usageError(fs, "give an enrol URI, or -code, -activation and -server")
	}
	if req.Platform != "android" && req.Platform != "ios" {
		return a.usageError(fs, "-platform must be android or ios")
	}
	if req.Model == "" || req.AppVersion == "" {
		return a.usageError(fs, "-model and -app-version must not be empty")
	}
	if *pushToken != "" {
		if err := checkToken(*pushToken); err != nil {
			return a.usageError(fs, "-push-token: %v", err)
		}
		req.Push = &pushTokenBody{Provider: "fcm", Token: *pushToken}
	}

	if err := checkStateWritable(a.statePath, *force); err != nil {
		return a.fail(err)
	}
	if u, err := url.Parse(base); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		a.warn("the server URL is plain http: the activation secret travels unencrypted")
	}

	key, err := newDeviceKey()
	if err != nil {
		return a.fail(fmt.Errorf("generate key: %w", err))
	}
	if req.PublicKey, err = publicJWK(&key.PublicKey); err != nil {
		return a.fail(err)
	}
	if req.Proof, err = enrolProof(key, req.ActivationID, time.Now()); err != nil {
		return a.fail(fmt.Errorf("sign enrolment proof: %w", err))
	}

	c := newClient(base, a.timeout)
	resp, data, err := c.publicRequest(ctx, http.MethodPost, pathEnrollments, req)
	if err != nil {
		return a.fail(err)
	}
	if err := expectStatus(resp, http.StatusCreated); err != nil {
		return a.fail(err)
	}
	var er enrolResponse
	if err := json.Unmarshal(data, &er); err != nil || er.DeviceID == "" {
		return a.fail(fmt.Errorf("malformed enrolment answer (HTTP %d)", resp.StatusCode))
	}
	st := &deviceState{
		Server:    base,
		DeviceID:  er.DeviceID,
		Subject:   er.Subject,
		CreatedAt: er.CreatedAt,
		Platform:  req.Platform,
		key:       key,
	}
	if err := saveState(a.statePath, st); err != nil {
		return a.fail(fmt.Errorf("device %s was enrolled but its key could not be saved (%v): revoke it at the desk", clean(er.DeviceID), err))
	}
	fmt.Fprintf(a.stdout, "enrolled device %s for subject %s\nstate saved to %s\n", clean(er.DeviceID), clean(er.Subject), a.statePath)
	return exitOK
}

func cmdDevices(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("devices", "[-json]")
	asJSON := fs.Bool("json", false, "print the server's JSON answer as is")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 0 {
		return a.usageError(fs, "devices takes no argument")
	}
	c, st, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	resp, data, err := c.deviceRequest(ctx, http.MethodGet, pathDevices, nil)
	if err != nil {
		return a.fail(err)
	}
	if err := expectStatus(resp, http.StatusOK); err != nil {
		return a.fail(err)
	}
	if *asJSON {
		a.stdout.Write(data)
		if len(data) == 0 || data[len(data)-1] != '\n' {
			fmt.Fprintln(a.stdout)
		}
		return exitOK
	}
	var list struct {
		Devices []deviceInfo `json:"devices"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return a.fail(fmt.Errorf("malformed device list: %v", err))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tDEVICE_ID\tSTATUS\tPLATFORM\tMODEL\tAPP_VERSION\tPUSH\tCREATED_AT\tLAST_USED_AT")
	for _, d := range list.Devices {
		mark, last := "", "-"
		if d.DeviceID == st.DeviceID {
			mark = "*"
		}
		if d.LastUsedAt != nil {
			last = *d.LastUsedAt
		}
		push := "no"
		if d.Push {
			push = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark,
			dash(clean(d.DeviceID)), dash(clean(d.Status)), dash(clean(d.Platform)), dash(clean(d.Model)),
			dash(clean(d.AppVersion)), push, dash(clean(d.CreatedAt)), dash(clean(last)))
	}
	if err := tw.Flush(); err != nil {
		return a.fail(err)
	}
	return exitOK
}

func cmdRemove(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("remove", "DEVICE_ID")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 1 {
		return a.usageError(fs, "remove takes one device id")
	}
	id := pos[0]
	if err := checkActivationID(id); err != nil { // same charset: URL-unreserved
		return a.usageError(fs, "device id: %v", err)
	}
	c, st, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	resp, _, err := c.deviceRequest(ctx, http.MethodDelete, pathDevices+"/"+id, nil)
	if err != nil {
		return a.fail(err)
	}
	if err := expectStatus(resp, http.StatusNoContent); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stdout, "removed device %s\n", id)
	if id == st.DeviceID {
		a.warn("that was this state file's own device: it can no longer sign requests")
	}
	return exitOK
}

func cmdPushToken(ctx context.Context, a *app, args []string) int {
	fs := a.newFlags("push-token", "TOKEN")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 1 {
		return a.usageError(fs, "push-token takes one token")
	}
	if err := checkToken(pos[0]); err != nil {
		return a.usageError(fs, "token: %v", err)
	}
	c, st, err := a.loadDevice()
	if err != nil {
		return a.fail(err)
	}
	resp, _, err := c.deviceRequest(ctx, http.MethodPut, pathPushToken, pushTokenBody{Provider: "fcm", Token: pos[0]})
	if err != nil {
		return a.fail(err)
	}
	if err := expectStatus(resp, http.StatusNoContent); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stdout, "push token set for device %s\n", clean(st.DeviceID))
	return exitOK
}

func cmdWhoami(_ context.Context, a *app, args []string) int {
	fs := a.newFlags("whoami", "[-json]")
	asJSON := fs.Bool("json", false, "print as JSON")
	pos, rc := a.parseFlags(fs, args)
	if rc >= 0 {
		return rc
	}
	if len(pos) != 0 {
		return a.usageError(fs, "whoami takes no argument")
	}
	st, err := loadState(a.statePath, a.warn)
	if err != nil {
		return a.fail(err)
	}
	tp, err := (&jose.JSONWebKey{Key: &st.key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return a.fail(fmt.Errorf("key thumbprint: %w", err))
	}
	info := struct {
		Server     string `json:"server"`
		DeviceID   string `json:"device_id"`
		Subject    string `json:"subject"`
		CreatedAt  string `json:"created_at"`
		Platform   string `json:"platform"`
		Thumbprint string `json:"jwk_thumbprint"`
		State      string `json:"state_file"`
	}{st.Server, st.DeviceID, st.Subject, st.CreatedAt, st.Platform, base64.RawURLEncoding.EncodeToString(tp), a.statePath}
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(info); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	fmt.Fprintf(a.stdout, "server:         %s\ndevice_id:      %s\nsubject:        %s\ncreated_at:     %s\nplatform:       %s\njwk_thumbprint: %s\nstate_file:     %s\n",
		clean(info.Server), clean(info.DeviceID), clean(info.Subject), clean(dash(info.CreatedAt)), clean(dash(info.Platform)), info.Thumbprint, info.State)
	return exitOK
}

// checkToken accepts a non-empty push token of printable ASCII without spaces.
func checkToken(t string) error {
	if t == "" {
		return fmt.Errorf("empty")
	}
	if len(t) > 4096 {
		return fmt.Errorf("too long")
	}
	for _, r := range t {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("only printable ASCII without spaces is allowed")
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
