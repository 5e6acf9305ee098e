"""Backfill: archives in, outcomes out, at scale (``engine backfill`` and ``engine map``).

* :mod:`engine.backfill.formats`: streaming readers and the pluggable log-format interface;
* :mod:`engine.backfill.pool`: conversion in worker processes (also used by the service, ``engine.pooled``);
* :mod:`engine.backfill.staging`: workers write the outputs, this process publishes them in input order;
* :mod:`engine.backfill.checkpoint`: resume state in the embedded SQLite store;
* :mod:`engine.backfill.progress`: progress bar / plain lines, counts and the final summary;
* :mod:`engine.backfill.run`: the ordered, bounded loop that ties them to the sinks.
"""
