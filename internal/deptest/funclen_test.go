package deptest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// maxFuncLines is the longest a non-test function may be (from its func
// line to its closing brace) without a reason written above it.
const maxFuncLines = 80

// longExempt are long functions in files other work is reshaping now: each
// is to be split or given its reason, then taken off this list. Keys are
// module-relative file paths and function names ("file.go:Name", methods
// by their method name).
var longExempt = map[string]bool{
	"lab/scale/mailbox.go:depositPhase":   true,
	"lab/scale/supernode.go:RunSupernode": true,
}

// hasLongReason says whether a doc comment says why its function is long:
// a sentence with "long because" or "long on purpose".
func hasLongReason(doc *ast.CommentGroup) bool {
	if doc == nil {
		return false
	}
	text := strings.ToLower(strings.Join(strings.Fields(doc.Text()), " "))
	return strings.Contains(text, "long because") || strings.Contains(text, "long on purpose")
}

// TestFunctionLength: no non-test function of the module is over
// maxFuncLines lines unless its doc comment says why (STYLE.md: a function
// a reader can hold in their head, or a reason it cannot be split).
func TestFunctionLength(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range listModule(t) {
		rel := strings.TrimPrefix(p.ImportPath, module)
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
				lines := end.Line - start.Line + 1
				key := rel + "/" + name + ":" + fd.Name.Name
				if lines <= maxFuncLines || hasLongReason(fd.Doc) || longExempt[key] {
					continue
				}
				t.Errorf("%s:%d: %s is %d lines (over %d): split it, or say above it why it is long (\"Long because ...\")",
					rel+"/"+name, start.Line, fd.Name.Name, lines, maxFuncLines)
			}
		}
	}
}
