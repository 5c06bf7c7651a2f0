// Package kubernetes holds the test of the manifests in this directory: a
// kustomize base and an example overlay (see docs/operations.md).
package kubernetes

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// What the image and the server are (deploy/image, cmd/ecpsd).
const (
	imageUID = 65532 // deploy/image: User
	// ecpsd's own drain after SIGTERM is capped at 40 s (cmd/ecpsd/main.go);
	// long-polls last up to 30 s and are answered at once on SIGTERM.
	serverDrain = 40
)

// set is every object of one rendering (or of the files), by kind.
type set struct {
	namespaces  []*corev1.Namespace
	accounts    []*corev1.ServiceAccount
	secrets     []*corev1.Secret
	services    []*corev1.Service
	deployments []*appsv1.Deployment
	ingresses   []*networkingv1.Ingress
	policies    []*networkingv1.NetworkPolicy
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	cronjobs    []*batchv1.CronJob
	monitors    []*monitoringv1.ServiceMonitor
	rules       []*monitoringv1.PrometheusRule
	namespaceOf map[string]string // kind/name -> namespace
}

// decode strictly decodes one manifest into the Go type of its apiVersion
// and kind: an unknown field, a duplicate key or a wrong type is an error.
func (s *set) decode(doc []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	strict := func(obj any) error { return yaml.UnmarshalStrict(doc, obj) }
	var err error
	switch head.APIVersion + " " + head.Kind {
	case "v1 Namespace":
		o := &corev1.Namespace{}
		err, s.namespaces = strict(o), append(s.namespaces, o)
	case "v1 ServiceAccount":
		o := &corev1.ServiceAccount{}
		err, s.accounts = strict(o), append(s.accounts, o)
	case "v1 Secret":
		o := &corev1.Secret{}
		err, s.secrets = strict(o), append(s.secrets, o)
	case "v1 Service":
		o := &corev1.Service{}
		err, s.services = strict(o), append(s.services, o)
	case "apps/v1 Deployment":
		o := &appsv1.Deployment{}
		err, s.deployments = strict(o), append(s.deployments, o)
	case "networking.k8s.io/v1 Ingress":
		o := &networkingv1.Ingress{}
		err, s.ingresses = strict(o), append(s.ingresses, o)
	case "networking.k8s.io/v1 NetworkPolicy":
		o := &networkingv1.NetworkPolicy{}
		err, s.policies = strict(o), append(s.policies, o)
	case "policy/v1 PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		err, s.pdbs = strict(o), append(s.pdbs, o)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		o := &autoscalingv2.HorizontalPodAutoscaler{}
		err, s.hpas = strict(o), append(s.hpas, o)
	case "batch/v1 CronJob":
		o := &batchv1.CronJob{}
		err, s.cronjobs = strict(o), append(s.cronjobs, o)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		o := &monitoringv1.ServiceMonitor{}
		err, s.monitors = strict(o), append(s.monitors, o)
	case "monitoring.coreos.com/v1 PrometheusRule":
		o := &monitoringv1.PrometheusRule{}
		err, s.rules = strict(o), append(s.rules, o)
	default:
		return fmt.Errorf("%s %s: a kind this test does not know: add it", head.APIVersion, head.Kind)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	if s.namespaceOf == nil {
		s.namespaceOf = map[string]string{}
	}
	if head.Kind != "Namespace" {
		s.namespaceOf[head.Kind+"/"+head.Metadata.Name] = head.Metadata.Namespace
	}
	return nil
}

// splitDocs splits a multi-document YAML file.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			out = append(out, d)
		}
	}
	return out
}

// TestFilesDecodeStrictly: every manifest file of the base and the overlay,
// as written, decodes strictly into the k8s.io/api (or Prometheus
// Operator) types, and every kustomization.yaml into kustomize's own type.
func TestFilesDecodeStrictly(t *testing.T) {
	for _, dir := range []string{"base", "overlays/example"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			name := filepath.Join(dir, e.Name())
			raw, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case e.Name() == "kustomization.yaml":
				var k kustypes.Kustomization
				if err := yaml.UnmarshalStrict(raw, &k); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				for _, r := range k.Resources {
					if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
						t.Errorf("%s: resource %s: %v", name, r, err)
					}
				}
			case e.Name() == "config.yaml" || e.Name() == "fcm.json":
				// Secret content: checked by TestOverlay.
			case strings.HasSuffix(e.Name(), ".yaml"):
				var s set
				for _, doc := range splitDocs(raw) {
					if err := s.decode(doc); err != nil {
						t.Errorf("%s: %v", name, err)
					}
					n++
				}
			default:
				t.Errorf("%s: unexpected file", name)
			}
		}
		if n == 0 {
			t.Errorf("%s: no manifest", dir)
		}
	}
}

// TestStrictDecodingRefusesMistakes: the decoding above does catch a
// misspelt or misplaced field and a duplicate key.
func TestStrictDecodingRefusesMistakes(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 3}\n",
		"misplaced field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, path: /}]}\n",
		"duplicate key":   "apiVersion: v1\nkind: Service\nmetadata: {name: x, name: y}\n",
		"wrong type":      "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {selector: 3}\n",
		"monitor field":   "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoints: [{prot: metrics}]}\n",
	} {
		var s set
		if err := s.decode([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// render runs kustomize (its Go API, as `kubectl kustomize`) on dir and
// strictly decodes every resource it outputs.
func render(t *testing.T, dir string) *set {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	s := &set{}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.decode(y); err != nil {
			t.Errorf("kustomize build %s: %v", dir, err)
		}
	}
	return s
}

func TestBase(t *testing.T) {
	s := render(t, "base")
	check(t, s, false)
}

func TestOverlay(t *testing.T) {
	s := render(t, "overlays/example")
	check(t, s, true)

	// Everything in the overlay's namespace.
	if len(s.namespaces) != 1 || s.namespaces[0].Name != "ecps" {
		t.Fatalf("namespaces %v, want ecps", s.namespaces)
	}
	if s.namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Error("namespace ecps: pod security not enforced as restricted")
	}
	for obj, ns := range s.namespaceOf {
		if ns != "ecps" {
			t.Errorf("%s in namespace %q, want ecps", obj, ns)
		}
	}
	// A pinned image from a registry, never :latest.
	for _, c := range s.deployments[0].Spec.Template.Spec.Containers {
		if !strings.Contains(c.Image, "/") || strings.HasSuffix(c.Image, ":latest") || !strings.ContainsAny(c.Image, ":@") {
			t.Errorf("container %s: image %q, want a registry name with a tag or digest", c.Name, c.Image)
		}
	}
	// Redis is reached in its own namespace.
	for _, p := range s.policies {
		for _, r := range p.Spec.Egress {
			if hasPort(r.Ports, 6379) && (len(r.To) == 0 || r.To[0].NamespaceSelector == nil ||
				r.To[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "ecps-redis") {
				t.Errorf("NetworkPolicy %s: Redis egress not to namespace ecps-redis: %+v", p.Name, r.To)
			}
		}
	}
	if s.monitors[0].Labels["release"] != "prometheus" || s.rules[0].Labels["release"] != "prometheus" {
		t.Error("ServiceMonitor, PrometheusRule: the overlay's release label is missing")
	}
}

// check holds the objects to each other: labels and selectors, ports, probe
// paths, the Secret's keys and the config in it.
func check(t *testing.T, s *set, overlay bool) {
	t.Helper()
	one := func(kind string, n int) {
		t.Helper()
		if n != 1 {
			t.Fatalf("%d %s, want 1", n, kind)
		}
	}
	one("Deployment", len(s.deployments))
	one("Service", len(s.services))
	one("Ingress", len(s.ingresses))
	one("PodDisruptionBudget", len(s.pdbs))
	one("HorizontalPodAutoscaler", len(s.hpas))
	one("CronJob", len(s.cronjobs))
	one("ServiceMonitor", len(s.monitors))
	one("PrometheusRule", len(s.rules))
	one("Secret", len(s.secrets))
	one("ServiceAccount", len(s.accounts))
	d, svc, ing, pdb, hpa, cj, sm := s.deployments[0], s.services[0], s.ingresses[0], s.pdbs[0], s.hpas[0], s.cronjobs[0], s.monitors[0]
	secret := s.secrets[0]

	// The Secret: the config, generated with a content hash in its name.
	if !strings.HasPrefix(secret.Name, "ecpsd-config-") {
		t.Errorf("Secret %s: want a generated ecpsd-config-<hash>", secret.Name)
	}
	files := map[string][]byte{}
	for k, v := range secret.Data {
		files[k] = v
	}
	for k, v := range secret.StringData {
		files[k] = []byte(v)
	}
	cfgYAML, ok := files["config.yaml"]
	if !ok {
		t.Fatalf("Secret %s has no config.yaml: keys %v", secret.Name, keys(files))
	}
	cfg := checkConfig(t, cfgYAML)

	// The Deployment.
	pod := d.Spec.Template
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("Deployment: replicas %v, want 3", d.Spec.Replicas)
	}
	sel := selector(t, "Deployment", d.Spec.Selector.MatchLabels)
	if !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("Deployment: selector %v does not select its pods %v", sel, pod.Labels)
	}
	if cjPods := labels.Set(cj.Spec.JobTemplate.Spec.Template.Labels); sel.Matches(cjPods) {
		t.Errorf("the Deployment's selector also selects the CronJob's pods %v", cjPods)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("Deployment: rolling update must keep every replica until its successor is ready (maxUnavailable 0)")
	}
	if pod.Spec.ServiceAccountName != s.accounts[0].Name {
		t.Errorf("Deployment: service account %q, want %q", pod.Spec.ServiceAccountName, s.accounts[0].Name)
	}
	checkPodSecurity(t, "Deployment", &pod.Spec)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("Deployment: %d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != cfg.listenPort || ports["metrics"] != cfg.metricsPort {
		t.Errorf("container ports %v, want http %d and metrics %d (listen and metrics_listen of config.yaml)", ports, cfg.listenPort, cfg.metricsPort)
	}
	probe := func(name string, p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", name, path)
			return
		}
		if p.HTTPGet.Path != path {
			t.Errorf("%s probe: path %s, want %s", name, p.HTTPGet.Path, path)
		}
		if resolvePort(c.Ports, p.HTTPGet.Port) != cfg.listenPort {
			t.Errorf("%s probe: port %s is not the main listener (%d)", name, p.HTTPGet.Port.String(), cfg.listenPort)
		}
	}
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("liveness", c.LivenessProbe, "/healthz")
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 5 {
		t.Error("Deployment: want a preStop sleep of ≥ 5 s (no shell in the image: the kubelet's sleep action)")
	} else if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < c.Lifecycle.PreStop.Sleep.Seconds+serverDrain {
		t.Errorf("terminationGracePeriodSeconds %v < preStop %d s + ecpsd's drain %d s", g, c.Lifecycle.PreStop.Sleep.Seconds, serverDrain)
	}
	checkResources(t, "Deployment", c)
	checkConfigMount(t, s, "Deployment", &pod.Spec, c, files, cfg)

	// The Service selects those pods, on their ports.
	if !selector(t, "Service", svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("Service selector %v does not select the Deployment's pods", svc.Spec.Selector)
	}
	svcPorts := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = resolvePort(c.Ports, p.TargetPort)
		if svcPorts[p.Name] == 0 {
			t.Errorf("Service port %s: target %s is no container port", p.Name, p.TargetPort.String())
		}
	}

	// The Ingress sends the public host to the Service's http port.
	rule := ing.Spec.Rules[0]
	if rule.Host != cfg.publicHost {
		t.Errorf("Ingress host %q, want the host of public_url %q", rule.Host, cfg.publicHost)
	}
	if len(ing.Spec.TLS) == 0 || !slices.Contains(ing.Spec.TLS[0].Hosts, rule.Host) {
		t.Errorf("Ingress: no TLS for %s", rule.Host)
	}
	for _, p := range rule.HTTP.Paths {
		b := p.Backend.Service
		if b == nil || b.Name != svc.Name || svcPorts[b.Port.Name] != cfg.listenPort {
			t.Errorf("Ingress path %s: backend %+v, want service %s port http", p.Path, b, svc.Name)
		}
	}

	// The PodDisruptionBudget and the autoscaler.
	if !selector(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) {
		t.Error("PodDisruptionBudget does not select the Deployment's pods")
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	ref := hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HorizontalPodAutoscaler targets %+v, want Deployment %s", ref, d.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < *d.Spec.Replicas || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("HorizontalPodAutoscaler: min %v max %d, want min ≥ %d < max", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas, *d.Spec.Replicas)
	}
	for _, m := range hpa.Spec.Metrics {
		if m.Resource != nil && c.Resources.Requests.Name(m.Resource.Name, "").IsZero() {
			t.Errorf("HorizontalPodAutoscaler scales on %s, which the container does not request", m.Resource.Name)
		}
	}

	// The ServiceMonitor scrapes the Service's metrics port.
	if !selector(t, "ServiceMonitor", sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the Service %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || svcPorts[sm.Spec.Endpoints[0].Port] != cfg.metricsPort ||
		sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want port metrics (%d), /metrics", sm.Spec.Endpoints, cfg.metricsPort)
	}

	// The CronJob: daily `ecpsd directory import -config … FILE`.
	checkCronJob(t, s, cj, files, cfg)

	// The NetworkPolicies.
	checkPolicies(t, s, pod, cj.Spec.JobTemplate.Spec.Template)
}

var ecpsdBuild struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// ecpsd builds cmd/ecpsd once per test run, as deploy/image builds it (they
// share the compiled packages).
func ecpsd(t *testing.T) string {
	t.Helper()
	b := &ecpsdBuild
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "ecps-k8s-test-"); b.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", b.dir, "./cmd/ecpsd")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		b.out, b.err = cmd.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("go build ./cmd/ecpsd: %v\n%s", b.err, b.out)
	}
	return filepath.Join(b.dir, "ecpsd")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if ecpsdBuild.dir != "" {
		os.RemoveAll(ecpsdBuild.dir)
	}
	os.Exit(code)
}

// config is what the test reads of config.yaml (ecpsd check-config checks all of it).
type config struct {
	listenPort, metricsPort int32
	publicHost              string
	credentialsFile         string
}

// checkConfig runs `ecpsd check-config` on the Secret's config.yaml: every
// key must be one ecpsd knows, every value valid.
func checkConfig(t *testing.T, raw []byte) config {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ecpsd(t), "check-config", "-config", tmp)
	cmd.Env = os.Environ()
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ECPS_") { // overrides of the developer's shell
			cmd.Env = slices.DeleteFunc(cmd.Env, func(e string) bool { return e == kv })
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ecpsd check-config on the Secret's config.yaml: %v\n%s", err, out)
	}
	var f struct {
		Listen        string `json:"listen"`
		MetricsListen string `json:"metrics_listen"`
		PublicURL     string `json:"public_url"`
		Push          struct {
			FCM struct {
				CredentialsFile string `json:"credentials_file"`
			} `json:"fcm"`
		} `json:"push"`
	}
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var c config
	c.listenPort = portOf(t, "listen", f.Listen)
	if f.MetricsListen == "" {
		t.Fatal("config.yaml: set metrics_listen (the metrics port is apart from the public one)")
	}
	c.metricsPort = portOf(t, "metrics_listen", f.MetricsListen)
	u, err := url.Parse(f.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	c.publicHost = u.Hostname()
	c.credentialsFile = f.Push.FCM.CredentialsFile
	return c
}

func portOf(t *testing.T, key, hostport string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("config.yaml: %s %q", key, hostport)
	}
	return int32(n)
}

// checkConfigMount: -config names config.yaml in a volume of the Secret, and
// the FCM credentials file is a key of a mounted Secret too.
func checkConfigMount(t *testing.T, s *set, what string, spec *corev1.PodSpec, c corev1.Container, files map[string][]byte, cfg config) {
	t.Helper()
	i := slices.Index(c.Args, "-config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("%s: container %s has no -config: args %q", what, c.Name, c.Args)
	}
	paths := []string{c.Args[i+1]}
	if cfg.credentialsFile != "" {
		paths = append(paths, cfg.credentialsFile)
	}
	for _, p := range paths {
		vol, key := mountedAt(t, spec, c, p)
		if vol == nil || vol.Secret == nil {
			t.Errorf("%s: %s is not in a mounted Secret", what, p)
			continue
		}
		if vol.Secret.SecretName != s.secrets[0].Name {
			t.Errorf("%s: volume %s mounts Secret %q, want %q", what, vol.Name, vol.Secret.SecretName, s.secrets[0].Name)
		}
		if _, ok := files[key]; !ok {
			t.Errorf("%s: %s: the Secret has no key %q (keys %v)", what, p, key, keys(files))
		}
	}
}

// mountedAt finds the volume mounted over file p and the key (file name) in it.
func mountedAt(t *testing.T, spec *corev1.PodSpec, c corev1.Container, p string) (*corev1.Volume, string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/"); ok {
			for i := range spec.Volumes {
				if spec.Volumes[i].Name == m.Name {
					return &spec.Volumes[i], rel
				}
			}
			t.Errorf("container %s mounts an undeclared volume %s", c.Name, m.Name)
		}
	}
	return nil, ""
}

func checkCronJob(t *testing.T, s *set, cj *batchv1.CronJob, files map[string][]byte, cfg config) {
	t.Helper()
	f := strings.Fields(cj.Spec.Schedule)
	if len(f) != 5 || f[2] != "*" || f[3] != "*" || f[4] != "*" {
		t.Errorf("CronJob schedule %q: want daily (M H * * *)", cj.Spec.Schedule)
	} else if m, err := strconv.Atoi(f[0]); err != nil || m > 59 {
		t.Errorf("CronJob schedule %q: minute", cj.Spec.Schedule)
	} else if h, err := strconv.Atoi(f[1]); err != nil || h > 23 {
		t.Errorf("CronJob schedule %q: hour", cj.Spec.Schedule)
	}
	if cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != "Europe/Paris" {
		t.Errorf("CronJob: timeZone %v, want Europe/Paris", cj.Spec.TimeZone)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("CronJob: concurrencyPolicy %q, want Forbid (two imports at once)", cj.Spec.ConcurrencyPolicy)
	}
	spec := &cj.Spec.JobTemplate.Spec.Template.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("CronJob: restartPolicy %q", spec.RestartPolicy)
	}
	checkPodSecurity(t, "CronJob", spec)
	if len(spec.Containers) != 1 {
		t.Fatalf("CronJob: %d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != s.deployments[0].Spec.Template.Spec.Containers[0].Image {
		t.Errorf("CronJob: image %q, want the Deployment's %q", c.Image, s.deployments[0].Spec.Template.Spec.Containers[0].Image)
	}
	if len(c.Command) != 0 || len(c.Args) != 5 || !slices.Equal(c.Args[:3], []string{"directory", "import", "-config"}) {
		t.Fatalf("CronJob: args %q, want directory import -config FILE SOURCE (the image's entrypoint is ecpsd)", c.Args)
	}
	checkResources(t, "CronJob", c)
	checkConfigMount(t, s, "CronJob", spec, c, files, config{})
	// The file imported is what the init container downloaded, on a shared volume.
	src := c.Args[4]
	vol, _ := mountedAt(t, spec, c, src)
	if vol == nil || vol.EmptyDir == nil {
		t.Fatalf("CronJob: %s is not on a scratch volume", src)
	}
	found := false
	for _, ic := range spec.InitContainers {
		checkResources(t, "CronJob init", ic)
		if v, _ := mountedAt(t, spec, ic, src); v != nil && v.Name == vol.Name && slices.Contains(ic.Args, src) {
			found = true
		}
	}
	if !found {
		t.Errorf("CronJob: no init container writes %s", src)
	}
}

func checkPodSecurity(t *testing.T, what string, spec *corev1.PodSpec) {
	t.Helper()
	ps := spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser != imageUID ||
		ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v: want runAsNonRoot, runAsUser %d (the image's), seccomp RuntimeDefault", what, ps, imageUID)
	}
	// A Secret's files are root's: with a mode that others cannot read, the
	// pod's fsGroup must be the image's group and the mode group-readable.
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		mode := int32(0o644)
		if v.Secret.DefaultMode != nil {
			mode = *v.Secret.DefaultMode
		}
		if mode&0o004 == 0 && (ps == nil || ps.FSGroup == nil || *ps.FSGroup != imageUID || mode&0o040 == 0) {
			t.Errorf("%s: volume %s (mode %#o) is unreadable by uid %d: set fsGroup %d and a group-readable mode", what, v.Name, mode, imageUID, imageUID)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (no Kubernetes API use)", what)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: container %s: want no privilege escalation, a read-only root, every capability dropped", what, c.Name)
		}
		for _, m := range c.VolumeMounts {
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
				t.Errorf("%s: container %s mounts an undeclared volume %s", what, c.Name, m.Name)
			}
		}
	}
}

func checkResources(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("%s: container %s: want cpu and memory requests and a memory limit, got %+v", what, c.Name, r)
	}
	if r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
		t.Errorf("%s: container %s: memory limit below its request", what, c.Name)
	}
}

// checkPolicies: the server's pods and the import's pods are each covered,
// in and out; ingress only from the ingress controller, the IdP and
// Prometheus (metrics port), on ports the pods have; egress to Redis.
func checkPolicies(t *testing.T, s *set, server, job corev1.PodTemplateSpec) {
	t.Helper()
	for _, pods := range []corev1.PodTemplateSpec{server, job} {
		var in, out bool
		var redis bool
		for _, p := range s.policies {
			if !selector(t, "NetworkPolicy "+p.Name, p.Spec.PodSelector.MatchLabels).Matches(labels.Set(pods.Labels)) {
				continue
			}
			in = in || slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
			out = out || slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
			for _, r := range p.Spec.Ingress {
				if len(r.From) == 0 {
					t.Errorf("NetworkPolicy %s: an ingress rule from anywhere", p.Name)
				}
				for _, peer := range r.From {
					if peer.NamespaceSelector == nil || peer.PodSelector == nil || len(peer.PodSelector.MatchLabels) == 0 {
						t.Errorf("NetworkPolicy %s: ingress from %+v: want named pods of a named namespace", p.Name, peer)
					}
				}
				if len(r.Ports) == 0 {
					t.Errorf("NetworkPolicy %s: an ingress rule on every port", p.Name)
				}
				for _, port := range r.Ports {
					if port.Port == nil || resolvePort(pods.Spec.Containers[0].Ports, *port.Port) == 0 {
						t.Errorf("NetworkPolicy %s: ingress port %v is no port of the pods", p.Name, port.Port)
					}
				}
			}
			for _, r := range p.Spec.Egress {
				redis = redis || hasPort(r.Ports, 6379)
			}
		}
		if !in || !out {
			t.Errorf("pods %v: ingress covered %v, egress covered %v: want both", pods.Labels, in, out)
		}
		if !redis {
			t.Errorf("pods %v: no egress to Redis (6379)", pods.Labels)
		}
	}
	// The server's ingress: from exactly these namespaces, on these ports.
	want := map[string]string{"ingress-nginx": "http", "keycloak": "http", "monitoring": "metrics"}
	got := map[string]string{}
	for _, p := range s.policies {
		if !selector(t, "", p.Spec.PodSelector.MatchLabels).Matches(labels.Set(server.Labels)) {
			continue
		}
		for _, r := range p.Spec.Ingress {
			for _, peer := range r.From {
				for _, port := range r.Ports {
					got[peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]] = port.Port.String()
				}
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the server's pods accept connections from %v, want %v", got, want)
	}
	// Nothing comes in to the import's pods.
	for _, p := range s.policies {
		if selector(t, "", p.Spec.PodSelector.MatchLabels).Matches(labels.Set(job.Labels)) && len(p.Spec.Ingress) > 0 {
			t.Errorf("NetworkPolicy %s lets connections in to the import's pods", p.Name)
		}
	}
}

func hasPort(ports []networkingv1.NetworkPolicyPort, n int) bool {
	return slices.ContainsFunc(ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntValue() == n })
}

// resolvePort turns a port number or name into the container port, 0 if none.
func resolvePort(ports []corev1.ContainerPort, p intstr.IntOrString) int32 {
	for _, cp := range ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func selector(t *testing.T, what string, m map[string]string) labels.Selector {
	t.Helper()
	if len(m) == 0 {
		t.Errorf("%s: an empty selector (selects everything)", what)
	}
	return labels.SelectorFromSet(m)
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var update = flag.Bool("update", false, "write base/prometheusrule.yaml from deploy/prometheus/ecpsd-rules.yml")

const prometheusRuleHeader = `# The alert and recording rules of deploy/prometheus/ecpsd-rules.yml, for the
# Prometheus Operator. Generated: do not edit; after a change of the rules run
#   go test ./deploy/kubernetes -run TestPrometheusRule -update
`

// TestPrometheusRule: base/prometheusrule.yaml holds exactly the groups of
// deploy/prometheus/ecpsd-rules.yml (which promtool checks and tests).
func TestPrometheusRule(t *testing.T) {
	raw, err := os.ReadFile("../prometheus/ecpsd-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(raw, &rules); err != nil {
		t.Fatalf("ecpsd-rules.yml as the Prometheus Operator's rule groups: %v", err)
	}
	want := monitoringv1.PrometheusRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule"},
		ObjectMeta: metav1.ObjectMeta{Name: "ecpsd", Labels: map[string]string{"app.kubernetes.io/name": "ecpsd"}},
		Spec:       monitoringv1.PrometheusRuleSpec{Groups: rules.Groups},
	}
	out, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	out = append([]byte(prometheusRuleHeader), out...)
	if *update {
		if err := os.WriteFile("base/prometheusrule.yaml", out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("base/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var s set
	if err := s.decode(got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, out) {
		t.Fatal("base/prometheusrule.yaml is not the rules of deploy/prometheus/ecpsd-rules.yml: " +
			"run go test ./deploy/kubernetes -run TestPrometheusRule -update")
	}
}
