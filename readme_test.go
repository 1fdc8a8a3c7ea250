package asyncmonolith_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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

// TestReadmeShape keeps the README what a newcomer reads in ten minutes: short, the two
// commands before the first section, and no leftover editing markers. The rest lives in docs/.
func TestReadmeShape(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	if n := strings.Count(text, "\n"); n > 200 {
		t.Errorf("README.md has %d lines, want at most 200: move detail into a docs/ page", n)
	}
	top := text
	if i := strings.Index(text, "\n## "); i >= 0 {
		top = text[:i]
	}
	for _, cmd := range []string{"go run ./example", "./scripts/test.sh"} {
		if !strings.Contains(top, cmd) {
			t.Errorf("README.md does not show %q before its first section", cmd)
		}
	}
	for _, name := range docFiles(t) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "<!-- section:") {
			t.Errorf("%s still holds a <!-- section: … --> marker", name)
		}
	}
}

// docFiles lists the Markdown files whose relative links TestDocsLinksResolve checks.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md"}
	for _, name := range []string{"bench/README.md", "natsrelay/README.md"} {
		if _, err := os.Stat(name); err == nil {
			files = append(files, name)
		}
	}
	return append(files, pages...)
}

var (
	mdFence      = regexp.MustCompile("(?ms)^ {0,3}```.*?^ {0,3}```[^\n]*$")
	mdInlineCode = regexp.MustCompile("`+[^`\n]*`+")
	mdLink       = regexp.MustCompile(`!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	mdHeading    = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$`)
	mdSlugDrop   = regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
)

// stripCode removes fenced blocks and inline code spans, where brackets are not links.
func stripCode(s string) string {
	return mdInlineCode.ReplaceAllString(mdFence.ReplaceAllString(s, ""), "")
}

// anchors returns the heading anchors of a Markdown text as GitHub generates them:
// lower case, punctuation dropped, spaces as hyphens, repeats suffixed -1, -2, ….
func anchors(text string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(mdFence.ReplaceAllString(text, ""), -1) {
		h := strings.ReplaceAll(m[1], "`", "")
		h = mdLink.ReplaceAllStringFunc(h, func(l string) string { // [text](url) → text
			return l[strings.Index(l, "[")+1 : strings.Index(l, "](")]
		})
		slug := strings.ReplaceAll(mdSlugDrop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		if n := seen[slug]; n > 0 {
			out[slug+"-"+strconv.Itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// TestDocsLinksResolve checks that every relative link in the README, CONTRIBUTING, the
// CHANGELOG and docs/*.md points to a file that exists and, for a #fragment into a
// Markdown file, to one of its headings.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	texts := map[string]string{}
	read := func(name string) (string, bool) {
		if s, ok := texts[name]; ok {
			return s, true
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return "", false
		}
		texts[name] = string(b)
		return texts[name], true
	}
	checked := 0
	for _, file := range docFiles(t) {
		text, ok := read(file)
		if !ok {
			t.Fatalf("cannot read %s", file)
		}
		for _, m := range mdLink.FindAllStringSubmatch(stripCode(text), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(file), path)))
			}
			checked++
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: dead link %q: %s does not exist", file, target, dest)
				continue
			}
			if frag == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s: link %q has a fragment into a file that is not Markdown", file, target)
				continue
			}
			destText, _ := read(dest)
			if !anchors(destText)[frag] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", file, target, dest, frag)
			}
		}
	}
	if checked < 50 {
		t.Errorf("checked only %d relative links: the link pattern no longer matches the docs", checked)
	}
}

// TestDocsSettingsListEveryConfigField keeps docs/settings.md complete: every field of
// Config (read from config.go's syntax tree) has a row in one of its tables.
func TestDocsSettingsListEveryConfigField(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("docs/settings.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != "Config" {
			return true
		}
		for _, fl := range ts.Type.(*ast.StructType).Fields.List {
			for _, name := range fl.Names {
				fields = append(fields, name.Name)
			}
		}
		return false
	})
	if len(fields) < 20 {
		t.Fatalf("found %d Config fields in config.go; has Config moved?", len(fields))
	}
	for _, name := range fields {
		if !strings.Contains(string(doc), "\n| `"+name+"` |") {
			t.Errorf("docs/settings.md has no row for Config.%s (its default and meaning)", name)
		}
	}
}

// TestDocsContributingLayoutComplete keeps CONTRIBUTING.md's layout tables up to date: every
// non-test Go file of the root package and every directory of the repository (and of
// internal/) has a row.
func TestDocsContributingLayoutComplete(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("CONTRIBUTING.md")
	if err != nil {
		t.Fatal(err)
	}
	has := func(name string) bool {
		return strings.Contains(string(doc), "\n| `"+name+"` |") || strings.Contains(string(doc), "\n| `"+name+"/") // a directory, or one of its subdirectories
	}
	var want []string
	for _, dir := range []string{".", "internal"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if dir != "." {
				name = dir + "/" + name
			}
			switch {
			case strings.HasPrefix(e.Name(), "."), name == "internal":
			case e.IsDir():
				want = append(want, name)
			case strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"):
				want = append(want, name)
			}
		}
	}
	if len(want) < 30 {
		t.Fatalf("found only %d files and directories to check: %v", len(want), want)
	}
	for _, name := range want {
		if !has(name) {
			t.Errorf("CONTRIBUTING.md's layout has no row for %s", name)
		}
	}
}
