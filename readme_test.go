package asyncmonolith_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickStartCompiles builds the README's quick start as a program, through a
// build overlay, so the README cannot drift from the API.
func TestReadmeQuickStartCompiles(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a program")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "## Quick start")
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(text[i:])
	if i < 0 || m == nil {
		t.Fatal("README has no quick start code block")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(m[1]), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	target := filepath.Join(wd, "internal", "readmequickstart", "main.go")
	overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{target: src}})
	ov := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "quickstart"), "-overlay", ov, "./internal/readmequickstart")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README quick start does not compile: %v\n%s", err, out)
	}
}
