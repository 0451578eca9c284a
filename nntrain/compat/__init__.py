"""Small adapters around upstream bugs; each module says which bug it works around and when to delete it.

Part of the foundation: it imports nothing of nntrain, and every package may import it.
"""
