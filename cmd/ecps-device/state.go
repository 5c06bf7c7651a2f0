package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// deviceState is the content of the state file: one enrolled device.
// It holds the device private key, so the file is kept at mode 0600.
type deviceState struct {
	Server     string `json:"server"`      // service base URL, no trailing slash
	DeviceID   string `json:"device_id"`   // kid of every proof
	Subject    string `json:"subject"`     // practitioner idNat
	CreatedAt  string `json:"created_at"`  // as answered by the server
	Platform   string `json:"platform"`    // as sent at enrolment
	PrivateKey string `json:"private_key"` // PKCS#8 PEM, ECDSA P-256

	key *ecdsa.PrivateKey
}

// defaultStatePath is $ECPS_DEVICE_STATE, else $HOME/.config/ecps-device/state.json.
func defaultStatePath(getenv func(string) string) (string, error) {
	if p := getenv("ECPS_DEVICE_STATE"); p != "" {
		return p, nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", errors.New("no state path: set -state, $ECPS_DEVICE_STATE or $HOME")
		}
	}
	return filepath.Join(home, ".config", "ecps-device", "state.json"), nil
}

// loadState reads and validates the state file. warn receives a message when
// the file is readable by others.
func loadState(path string, warn func(string)) (*deviceState, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no enrolled device: state file %s does not exist (run enrol first)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 && warn != nil {
		warn(fmt.Sprintf("state file %s has mode %04o; it holds a private key and should be 0600", path, fi.Mode().Perm()))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var st deviceState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("state file %s: malformed JSON", path)
	}
	if st.DeviceID == "" {
		return nil, fmt.Errorf("state file %s: no device_id", path)
	}
	if _, err := checkServerURL(st.Server); err != nil {
		return nil, fmt.Errorf("state file %s: server: %w", path, err)
	}
	key, err := decodePrivateKey(st.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("state file %s: private_key: %w", path, err)
	}
	st.key = key
	return &st, nil
}

// saveState writes the state atomically: a 0600 temporary file in the same
// folder, synced, then renamed over path. The folder is created 0700 if missing.
func saveState(path string, st *deviceState) error {
	if st.key == nil {
		return errors.New("state has no private key")
	}
	pemKey, err := encodePrivateKey(st.key)
	if err != nil {
		return err
	}
	out := *st
	out.PrivateKey = pemKey
	data, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	data = append(data, '\n')

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state folder: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("create state file: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("chmod state file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close state file: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("rename state file: %w", err)
	}
	ok = true
	return nil
}

// checkStateWritable fails early (before anything is sent to the server) when
// a device is already saved at path or its folder cannot be created.
func checkStateWritable(path string, force bool) error {
	if _, err := os.Lstat(path); err == nil && !force {
		return fmt.Errorf("state file %s already holds a device (one device per state file): use another -state, or -force to replace it", path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create state folder: %w", err)
	}
	return nil
}

func encodePrivateKey(key *ecdsa.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

func decodePrivateKey(s string) (*ecdsa.PrivateKey, error) {
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "PRIVATE KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("want one PKCS#8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("malformed PKCS#8 key")
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 key")
	}
	return key, nil
}
