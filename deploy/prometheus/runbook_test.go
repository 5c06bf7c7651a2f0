package prometheus

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestEveryAlertIsTested: each alert has a case in the unit tests that
// expects it to fire, and a runbook section in docs/operations.md.
func TestEveryAlertIsTested(t *testing.T) {
	rules := readRules(t)
	raw, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatal(err)
	}
	fired := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fired[a.Alertname] = true
			}
		}
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fired[r.Alert] {
				t.Errorf("alert %s: no unit test in %s expects it to fire", r.Alert, rulesTestFile)
			}
			if !bytes.Contains(doc, []byte("`"+r.Alert+"`")) {
				t.Errorf("alert %s: not explained in docs/operations.md", r.Alert)
			}
			anchor := strings.TrimPrefix(r.Annotations["runbook_url"], "https://github.com/ecps-sante/ecps/blob/main/docs/operations.md#")
			if anchor == r.Annotations["runbook_url"] || !slices.Contains(headingAnchors(doc), anchor) {
				t.Errorf("alert %s: runbook_url %q is no heading of docs/operations.md", r.Alert, r.Annotations["runbook_url"])
			}
			if r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
		}
	}
}

// headingAnchors are the GitHub anchors of a Markdown file's headings.
func headingAnchors(doc []byte) []string {
	var out []string
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		h = drop.ReplaceAllString(h, "")
		out = append(out, strings.ReplaceAll(h, " ", "-"))
	}
	return out
}
