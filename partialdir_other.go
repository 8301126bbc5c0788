//go:build !unix

package goproxy

// checkPrivateDir accepts any directory where ownership and modes are
// not Unix's: the default PartialDir is in the user's own temporary
// directory there.
func checkPrivateDir(dir string) error { return nil }
