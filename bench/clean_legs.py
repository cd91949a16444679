"""The DuckDB and Polars legs of bench_clean.py: the same pipeline as each library's own query, run as a script.

Both read the JSONL file with a fixed schema (id, input_text, target_text), drop rows with an empty or missing text,
rename, keep rows under MAX_CHARS characters, take a seeded sample of N rows and write JSON Lines. DuckDB samples
with its reservoir (applied to the filtered rows through a subquery; a sample clause on the table itself would be
applied before the WHERE); Polars scans with its streaming engine and samples the collected rows.
"""

DUCKDB_SCRIPT = """
import sys
import duckdb

src, dst, n, seed, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
con = duckdb.connect()
con.execute(f'''
COPY (
  SELECT * FROM (
    SELECT input_text AS prompt, target_text AS response
    FROM read_json($src, format = 'newline_delimited',
                   columns = {{'id': 'BIGINT', 'input_text': 'VARCHAR', 'target_text': 'VARCHAR'}})
    WHERE input_text IS NOT NULL AND input_text <> '' AND target_text IS NOT NULL AND target_text <> ''
      AND length(input_text) + length(target_text) < {max_chars}
  ) USING SAMPLE reservoir({n} ROWS) REPEATABLE ({seed})
) TO '{dst.replace("'", "''")}' (FORMAT json)
''', {"src": src})
"""

POLARS_SCRIPT = """
import sys
import polars as pl

src, dst, n, seed, max_chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
chars = pl.col("input_text").str.len_chars() + pl.col("target_text").str.len_chars()
rows = (
    pl.scan_ndjson(src, schema={"id": pl.Int64, "input_text": pl.String, "target_text": pl.String})
    .filter((pl.col("input_text").str.len_chars() > 0) & (pl.col("target_text").str.len_chars() > 0) & (chars < max_chars))
    .select(pl.col("input_text").alias("prompt"), pl.col("target_text").alias("response"))
    .collect(engine="streaming")
)
rows.sample(n=min(n, rows.height), seed=seed).write_ndjson(dst)
"""
