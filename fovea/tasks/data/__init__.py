"""Dataset formats, the decode-once image cache, defensive image opening and transforms."""
