"""Old home of the loopback test servers; they now live in `tests.fakes` and are re-exported here."""
