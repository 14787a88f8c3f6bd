"""The search spaces that ship with rbmsearch (installed as `rbmsearch.search_spaces`)."""
