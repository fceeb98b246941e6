package deploy_test

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is where docker-compose.yml, Dockerfile and go.mod live.
const repoRoot = ".."

// goodEnv is what an operator exports before `docker compose up`.
var goodEnv = map[string]string{
	"MXPROBE_HELO":            "probe.example.net",
	"MXPROBE_FROM":            "verify@example.net",
	"MXPROBE_API_KEYS":        "web:k1,ops:k2",
	"MXPROBE_CALLBACK_SECRET": "cb-secret",
}

// load reads docker-compose.yml as `docker compose` would, with env as the
// only environment (never the test process's own).
func load(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv(list),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	return cli.ProjectFromOptions(t.Context(), opts)
}

func loadGood(t *testing.T) *types.Project {
	t.Helper()
	p, err := load(t, goodEnv)
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestComposeNeedsSenderIdentityAndKeys(t *testing.T) {
	t.Parallel()
	without := func(key string) map[string]string {
		m := map[string]string{}
		for k, v := range goodEnv {
			if k != key {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string
	}{
		{name: "complete", env: goodEnv, wantErr: ""},
		{name: "no HELO", env: without("MXPROBE_HELO"), wantErr: "MXPROBE_HELO"},
		{name: "no FROM", env: without("MXPROBE_FROM"), wantErr: "MXPROBE_FROM"},
		{name: "no API keys", env: without("MXPROBE_API_KEYS"), wantErr: "MXPROBE_API_KEYS"},
		{name: "no callback secret", env: without("MXPROBE_CALLBACK_SECRET"), wantErr: "MXPROBE_CALLBACK_SECRET"},
	} {
		_, err := load(t, tc.env)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error = %v, want one naming %s", tc.name, err, tc.wantErr)
		}
	}
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := loadGood(t)
	names := p.ServiceNames()
	slices.Sort(names)
	if want := []string{"api", "redis", "worker"}; !slices.Equal(names, want) {
		t.Fatalf("services = %q, want %q", names, want)
	}

	commonEnv := map[string]string{
		"MXPROBE_REDIS_URL":       "redis://redis:6379/0",
		"MXPROBE_HELO":            "probe.example.net",
		"MXPROBE_FROM":            "verify@example.net",
		"MXPROBE_CALLBACK_SECRET": "cb-secret",
	}
	for _, tc := range []struct {
		name        string
		wantImage   string
		wantBuild   bool
		wantCommand []string
		wantPorts   []string // "published:target"
		wantEnv     map[string]string
		wantHealthy []string // depends_on with condition service_healthy
	}{
		{
			name:        "redis",
			wantImage:   "redis:7",
			wantCommand: []string{"redis-server", "--appendonly", "yes", "--appendfsync", "everysec"},
		},
		{
			name:        "api",
			wantImage:   "mxprobe:local",
			wantBuild:   true,
			wantCommand: []string{"serve", "--role", "api"},
			wantPorts:   []string{"8080:8080"},
			wantEnv:     merge(commonEnv, map[string]string{"MXPROBE_API_KEYS": "web:k1,ops:k2", "MXPROBE_LISTEN": ":8080"}),
			wantHealthy: []string{"redis"},
		},
		{
			name:        "worker",
			wantImage:   "mxprobe:local",
			wantBuild:   true,
			wantCommand: []string{"worker"},
			wantEnv:     merge(commonEnv, map[string]string{"MXPROBE_EGRESS": "default"}),
			wantHealthy: []string{"redis"},
		},
	} {
		s := p.Services[tc.name]
		if s.Image != tc.wantImage {
			t.Errorf("%s: image = %q, want %q", tc.name, s.Image, tc.wantImage)
		}
		if tc.wantBuild {
			if s.Build == nil {
				t.Errorf("%s: no build section", tc.name)
			} else {
				if abs, _ := filepath.Abs(repoRoot); s.Build.Context != abs {
					t.Errorf("%s: build context = %q, want the repository root %q", tc.name, s.Build.Context, abs)
				}
				if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
					t.Errorf("%s: Dockerfile: %v", tc.name, err)
				}
			}
		} else if s.Build != nil {
			t.Errorf("%s: unexpected build section", tc.name)
		}
		if !slices.Equal([]string(s.Command), tc.wantCommand) {
			t.Errorf("%s: command = %q, want %q", tc.name, s.Command, tc.wantCommand)
		}
		var ports []string
		for _, pc := range s.Ports {
			ports = append(ports, pc.Published+":"+strconv.FormatUint(uint64(pc.Target), 10))
		}
		if !slices.Equal(ports, tc.wantPorts) {
			t.Errorf("%s: ports = %q, want %q", tc.name, ports, tc.wantPorts)
		}
		for k, want := range tc.wantEnv {
			got, ok := s.Environment[k]
			if !ok || got == nil || *got != want {
				t.Errorf("%s: environment %s = %v, want %q", tc.name, k, deref(got), want)
			}
		}
		var healthy []string
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				healthy = append(healthy, dep)
			}
		}
		if !slices.Equal(healthy, tc.wantHealthy) {
			t.Errorf("%s: waits for healthy %q, want %q", tc.name, healthy, tc.wantHealthy)
		}
	}
}

func TestComposeRedisPersistsAndReportsHealth(t *testing.T) {
	t.Parallel()
	p := loadGood(t)
	r := p.Services["redis"]
	if i := slices.Index(r.Command, "--appendonly"); i < 0 || i+1 >= len(r.Command) || r.Command[i+1] != "yes" {
		t.Errorf("redis command %q does not turn on AOF", r.Command)
	}
	var data *types.ServiceVolumeConfig
	for i, v := range r.Volumes {
		if v.Target == "/data" {
			data = &r.Volumes[i]
		}
	}
	switch {
	case data == nil:
		t.Error("redis has no volume at /data, where the AOF file lives")
	case data.Type != types.VolumeTypeVolume:
		t.Errorf("redis /data is a %s, want a named volume", data.Type)
	default:
		if _, ok := p.Volumes[data.Source]; !ok {
			t.Errorf("redis volume %q is not declared at the top level", data.Source)
		}
	}
	hc := r.HealthCheck
	if hc == nil || hc.Disable || !slices.Contains([]string(hc.Test), "redis-cli") || !slices.Contains([]string(hc.Test), "ping") {
		t.Errorf("redis healthcheck = %+v, want redis-cli ping", hc)
	}
	if len(r.Ports) != 0 {
		t.Errorf("redis publishes %v; it must stay internal", r.Ports)
	}
}

// TestComposeWorkerScales: `docker compose up --scale worker=3` fails when
// the service has a fixed container name or a host port.
func TestComposeWorkerScales(t *testing.T) {
	t.Parallel()
	p := loadGood(t)
	w := p.Services["worker"]
	if w.ContainerName != "" {
		t.Errorf("worker has container_name %q: it could not be scaled", w.ContainerName)
	}
	if len(w.Ports) != 0 {
		t.Errorf("worker publishes ports %v: a second copy could not bind them", w.Ports)
	}
	if w.Deploy != nil && w.Deploy.Replicas != nil && *w.Deploy.Replicas == 1 {
		t.Error("worker pins replicas to 1")
	}
	// The worker's shutdown drains in-flight probes for --shutdown-timeout
	// (30s by default); Docker must wait longer than that before SIGKILL.
	if w.StopGracePeriod == nil || time.Duration(*w.StopGracePeriod) <= 30*time.Second {
		t.Errorf("worker stop_grace_period = %v, want more than the 30s shutdown timeout", w.StopGracePeriod)
	}
}

// TestComposeEnvIsRealSettings: every MXPROBE_* variable compose sets for a
// service must be read by a flag of that service's command. A variable no
// flag reads is silently ignored at run time (MXPROBE_ADDR once left the API
// listening on its default address while compose published another), so the
// test asks the real binary: it runs the service's command with -h and reads
// the [MXPROBE_…] name printFlagHelp prints beside every flag.
func TestComposeEnvIsRealSettings(t *testing.T) {
	t.Parallel()
	p := loadGood(t)
	bin := buildMxprobe(t)

	checked := 0
	var serveSettings map[string]bool
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		if s.Build == nil { // not our image (redis)
			continue
		}
		checked++
		settings := flagSettings(t, bin, s.Command)
		if s.Command[0] == "serve" {
			serveSettings = settings
		}
		for _, v := range slices.Sorted(maps.Keys(s.Environment)) {
			if strings.HasPrefix(v, "MXPROBE_") && !settings[v] {
				t.Errorf("service %s sets %s, but `mxprobe %s` has no flag that reads it (its settings: %s)",
					name, v, strings.Join(s.Command, " "), strings.Join(slices.Sorted(maps.Keys(settings)), " "))
			}
		}
	}
	if checked != 2 {
		t.Errorf("checked %d mxprobe services, want 2 (api and worker)", checked)
	}
	// The check catches the bug it exists for.
	for _, tc := range []struct {
		name string
		env  string
		want bool
	}{
		{name: "serve listens via MXPROBE_LISTEN", env: "MXPROBE_LISTEN", want: true},
		{name: "serve reads MXPROBE_API_KEYS", env: "MXPROBE_API_KEYS", want: true},
		{name: "MXPROBE_ADDR is no setting", env: "MXPROBE_ADDR", want: false},
		{name: "a flag's name is not its variable", env: "listen", want: false},
	} {
		if got := serveSettings[tc.env]; got != tc.want {
			t.Errorf("%s: serve reads %s = %v, want %v", tc.name, tc.env, got, tc.want)
		}
	}
}

// buildMxprobe builds the mxprobe binary from this checkout.
func buildMxprobe(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build mxprobe: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "mxprobe")
	cmd := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, "./cmd/mxprobe")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/mxprobe: %v\n%s", err, out)
	}
	return bin
}

// helpSetting is a flag's variable as printFlagHelp prints it, at the end of
// the flag's description line.
var helpSetting = regexp.MustCompile(`(?m)\s\[(MXPROBE_[A-Z0-9_]+)\]$`)

// flagSettings runs `mxprobe <command…> -h` with an empty environment and
// returns the MXPROBE_* variables its flags read.
func flagSettings(t *testing.T, bin string, command []string) map[string]bool {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, append(slices.Clone(command), "-h")...)
	cmd.Env = []string{}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mxprobe %s -h: %v\n%s", strings.Join(command, " "), err, stderr.Bytes())
	}
	settings := map[string]bool{}
	for _, m := range helpSetting.FindAllStringSubmatch(stdout.String(), -1) {
		settings[m[1]] = true
	}
	if !settings["MXPROBE_REDIS_URL"] {
		t.Fatalf("mxprobe %s -h lists no MXPROBE_REDIS_URL; has the help format changed?\n%s", strings.Join(command, " "), stdout.Bytes())
	}
	return settings
}

// dockerfile is the parsed shape of the Dockerfile that the tests check.
type dockerfile struct {
	stages     []string // FROM images, in order
	stageNames []string
	buildPkg   string // the package of `go build … ./cmd/…`
	copyFrom   []string
	user       string // last USER
	entrypoint string
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerfile
	goBuild := regexp.MustCompile(`go build .*\s(\./cmd/\S+)`)
	copyFrom := regexp.MustCompile(`^COPY\s+--from=(\S+)`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(line, "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			d.stages = append(d.stages, fields[1])
			name := ""
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				name = fields[3]
			}
			d.stageNames = append(d.stageNames, name)
		case "RUN":
			if m := goBuild.FindStringSubmatch(line); m != nil {
				d.buildPkg = m[1]
			}
		case "COPY":
			if m := copyFrom.FindStringSubmatch(line); m != nil {
				d.copyFrom = append(d.copyFrom, m[1])
			}
		case "USER":
			d.user = fields[1]
		case "ENTRYPOINT":
			d.entrypoint = strings.Join(fields[1:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	d := parseDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("stages = %q, want a multi-stage build", d.stages)
	}
	goVersion := goModVersion(t)
	if want := "golang:" + goVersion; d.stages[0] != want {
		t.Errorf("build stage = %q, want %q (go.mod says go %s)", d.stages[0], want, goVersion)
	}
	final := d.stages[len(d.stages)-1]
	if !strings.Contains(final, "distroless") && !strings.Contains(final, "-slim") {
		t.Errorf("runtime stage = %q, want distroless or debian-slim", final)
	}
	if d.buildPkg == "" {
		t.Fatal("no `go build … ./cmd/…` in the Dockerfile")
	}
	if _, err := os.Stat(filepath.Join(repoRoot, d.buildPkg, "main.go")); err != nil {
		t.Errorf("build target %s: %v", d.buildPkg, err)
	}
	for _, from := range d.copyFrom {
		if !slices.Contains(d.stageNames, from) {
			t.Errorf("COPY --from=%s names no stage (stages %q)", from, d.stageNames)
		}
	}
	if u, _, _ := strings.Cut(d.user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("USER = %q, want a non-root user", d.user)
	}
	if !strings.Contains(d.entrypoint, "mxprobe") {
		t.Errorf("ENTRYPOINT = %q, want the mxprobe binary", d.entrypoint)
	}
}

// goModVersion is the major.minor of go.mod's go directive.
func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}
