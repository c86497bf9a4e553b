-- Not llama-bench output: statements the SQL reader must refuse (each one alone, too).
CREATE TABLE IF NOT EXISTS llama_bench (
  model_filename TEXT,
  n_prompt INTEGER,
  n_gen INTEGER,
  avg_ts REAL
);

INSERT INTO llama_bench (model_filename, n_prompt, n_gen, avg_ts) VALUES ('m.gguf', '512', '0', '1.0');
DROP TABLE test;
ATTACH DATABASE '/tmp/harness-llamabench-attach.db' AS evil;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) INSERT INTO llama_bench (n_prompt) SELECT x FROM c;
