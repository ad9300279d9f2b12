"""Stage family 'source': the commit's checkout and its installed dependencies."""
