"""Small adapters around upstream bugs; each module says which bug it works around and when to delete it."""
