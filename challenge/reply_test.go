package challenge

import (
	"errors"
	"testing"
)

// Scripts' replies are read with their lengths checked: a short or unknown
// reply is an error, never an index out of range or a wrong answer.
func TestReadDecided(t *testing.T) {
	for _, tc := range []struct {
		vals []string
		want error
		ok   bool
	}{
		{[]string{"notfound"}, ErrNotFound, false},
		{[]string{"conflict"}, ErrConflict, false},
		{[]string{"gone"}, ErrGone, false},
		{[]string{"badnonce"}, ErrBadDecision, false},
		{[]string{"proof"}, nil, false},
		{nil, nil, false},
		{[]string{"approved", ""}, nil, false},
		{[]string{"approved", "", "idp", "push", "1"}, nil, true},
		{[]string{"denied", "fraud", "idp", "push", "1", "again", "1"}, nil, true},
		{[]string{"approved", "", "idp", "push", "1", "ok"}, nil, false},
	} {
		r, err := readDecided(tc.vals, nil)
		if tc.ok != (err == nil) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("readDecided(%q) = %+v, %v", tc.vals, r, err)
		}
		if tc.ok && (r.status != tc.vals[0] || r.clientID != "idp") {
			t.Errorf("readDecided(%q) = %+v", tc.vals, r)
		}
	}
	if _, err := readDecided(nil, errors.New("down")); err == nil {
		t.Error("a Redis error must be returned")
	}
}

func TestPollResult(t *testing.T) {
	for _, tc := range []struct {
		vals []string
		ok   bool
		want error
	}{
		{[]string{"pending"}, false, ErrPending},
		{[]string{"expired"}, false, ErrExpired},
		{[]string{"invalid_grant"}, false, ErrInvalidGrant},
		{[]string{"slow_down"}, false, nil},
		{[]string{"denied"}, false, nil},
		{[]string{"approved", "810001234565", "1"}, false, nil},
		{[]string{"approved", "810001234565", "1796296505214", "dev_x", "pin"}, true, nil},
		{[]string{"what"}, false, nil},
	} {
		res, err := pollResult(tc.vals)
		if tc.ok != (err == nil) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("pollResult(%q) = %+v, %v", tc.vals, res, err)
		}
		if tc.ok && (res.Subject != tc.vals[1] || res.DeviceID != "dev_x" || res.AuthTime.UnixMilli() != 1796296505214) {
			t.Errorf("pollResult(%q) = %+v", tc.vals, res)
		}
	}
	var slow *SlowDownError
	if _, err := pollResult([]string{"slow_down", "10"}); !errors.As(err, &slow) || slow.Interval.Seconds() != 10 {
		t.Errorf("slow_down: %v", err)
	}
}
