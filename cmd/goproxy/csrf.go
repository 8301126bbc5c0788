package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
)

// formGuard protects the status page's forms against cross-site
// requests, in two ways: the browser's own word (Sec-Fetch-Site, or an
// Origin that is not this server's host), checked by
// http.CrossOriginProtection; and a token in each form, bound to the
// credentials the page was shown to, which another site cannot read.
// The page uses no cookies: a browser sends the HTTP credentials it was
// given on every request, which is why both checks are needed.
type formGuard struct {
	key    []byte
	origin *http.CrossOriginProtection
}

func newFormGuard() *formGuard {
	key := make([]byte, 32)
	rand.Read(key)
	return &formGuard{key: key, origin: http.NewCrossOriginProtection()}
}

// token is the form token for the credentials of r. It changes with
// them, and at each start of the server.
func (g *formGuard) token(r *http.Request) string {
	mac := hmac.New(sha256.New, g.key)
	mac.Write([]byte("goproxy status form\x00"))
	mac.Write([]byte(r.Header.Get("Authorization")))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

var (
	errCrossOrigin = errors.New("a request from another site is refused")
	errFormToken   = errors.New("the form's token is missing or does not match the credentials: reload the page and try again")
)

// check admits a POST from a form of the status page.
func (g *formGuard) check(r *http.Request) error {
	if err := g.origin.Check(r); err != nil {
		return errCrossOrigin
	}
	got, err := base64.RawURLEncoding.DecodeString(r.PostFormValue("token"))
	if err != nil {
		return errFormToken
	}
	want, _ := base64.RawURLEncoding.DecodeString(g.token(r))
	if !hmac.Equal(got, want) {
		return errFormToken
	}
	return nil
}
