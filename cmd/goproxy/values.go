package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as Go writes durations ("30s",
// "1m30s"); 0 is also accepted.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler (JSON files are read as YAML
// too).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "want a duration such as 30s or 2m")
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return nodeError(n, "%q is not a duration such as 30s or 2m", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler, for -print-config.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// ByteSize is a number of bytes, written as a number or with a unit:
// 512KiB, 64MiB, 1GiB (or KB, MB, GB, in powers of ten).
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseByteSize(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return nodeError(n, "%q is not a size such as 65536, 512KiB or 1GiB", n.Value)
	}
	*b = ByteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n != 0 && (n*factor)/factor != n {
		return 0, errors.New("too large")
	}
	return n * factor, nil
}

// nodeError reports a bad value the way the YAML decoder reports its own
// (a TypeError), so that decoding goes on and every problem is reported.
func nodeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

// SecretRef names where a secret is: an environment variable or a file.
// A secret written in the config file itself is refused.
type SecretRef struct {
	Env  string `yaml:"env" json:"env"`
	File string `yaml:"file" json:"file"`
}

// UnmarshalYAML implements yaml.Unmarshaler, refusing inline values with
// the way to give them.
func (s *SecretRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return nodeError(n, "a secret is not written in the config file: give {env: VARIABLE} or {file: PATH}")
	}
	type plain SecretRef
	return n.Decode((*plain)(s))
}

// readSecret returns the secret in environment variable env or in file
// (at most one of them is set; neither gives ""). A file's trailing
// newline is not part of the secret.
func readSecret(getenv func(string) string, env, file string) (string, error) {
	switch {
	case env != "" && file != "":
		return "", errors.New("give the environment variable or the file, not both")
	case env != "":
		v := getenv(env)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty or not set", env)
		}
		return v, nil
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		v := strings.TrimRight(string(data), "\r\n")
		if v == "" {
			return "", fmt.Errorf("%s is empty", file)
		}
		return v, nil
	}
	return "", nil
}

// formatBytes writes n bytes for people: 512 B, 1.5 KiB, 6.0 MiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + "KMGTPE"[exp:exp+1] + "iB"
}
