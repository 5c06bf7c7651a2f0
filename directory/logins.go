package directory

import (
	"context"
	"encoding/json"
	"errors"
)

// The two questions the rest of the service asks the directory. Both answer
// "as without a directory" when none is loaded.

// Known reports whether idNat may be activated or logged in: true when no
// directory is loaded or idNat is in it, false when one is loaded and idNat
// is absent from it (the contract's unknown_user_id).
func (s *Store) Known(ctx context.Context, idNat string) (bool, error) {
	_, known, err := s.IdentityJSON(ctx, idNat)
	return known, err
}

// IdentityJSON returns idNat's identity as the contract's JSON, to be stored
// with a login and given with its approval: nil when no directory is loaded;
// known is false when one is loaded and idNat is absent from it.
func (s *Store) IdentityJSON(ctx context.Context, idNat string) (identity json.RawMessage, known bool, err error) {
	e, err := s.Lookup(ctx, idNat)
	switch {
	case errors.Is(err, ErrNotLoaded):
		return nil, true, nil
	case errors.Is(err, ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}
