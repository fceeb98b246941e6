package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Postgrey is a running postgrey policy server.
type Postgrey struct {
	// Addr is its policy-service address, host:port on 127.0.0.1.
	Addr string
	Proc *Proc
}

// StartPostgrey runs postgrey in the foreground on 127.0.0.1 with its own
// database directory, greylisting for delay. Its default whitelists are
// replaced by empty files and auto-whitelisting is off, so the outcome
// depends on the delay alone.
func StartPostgrey(t testing.TB, dir string, delay time.Duration) *Postgrey {
	t.Helper()
	root := filepath.Join(dir, "postgrey")
	db := filepath.Join(root, "db")
	if err := os.MkdirAll(db, 0o755); err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := chown(db, "postgrey"); err != nil {
		t.Fatalf("lab: postgrey's db directory must belong to postgrey: %v", err)
	}
	empty := filepath.Join(root, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatalf("lab: %v", err)
	}
	port, err := FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	secs := int(delay / time.Second)
	if secs < 1 {
		t.Fatalf("lab: postgrey delay %s: postgrey counts whole seconds", delay)
	}
	p := &Postgrey{Addr: addr}
	p.Proc = Start(t, dir, "postgrey", []string{"postgrey",
		"--inet=" + addr,
		"--dbdir=" + db,
		"--delay=" + strconv.Itoa(secs),
		"--auto-whitelist-clients=0",
		"--whitelist-clients=" + empty,
		"--whitelist-recipients=" + empty,
		"--hostname=mx.lab.test",
	})
	// Net::Server prints this after binding the port and dropping to the
	// postgrey user: from then on it answers policy requests.
	p.Proc.WaitFor(t, "Setting uid", startTimeout)
	return p
}

// SelfSignedCert writes a fresh ECDSA key and a self-signed certificate for
// host to dir and returns their paths, for a listener's STARTTLS.
func SelfSignedCert(t testing.TB, dir, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	certFile, keyFile = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatalf("lab: %v", err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatalf("lab: %v", err)
	}
	return certFile, keyFile
}
