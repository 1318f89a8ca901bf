# A TeraSort-like batch: generate records, compress them (a map step), sort
# them by key in memory, compress the sorted output with two threads and
# build an index of key prefixes. Phases alternate between one core and two,
# and between little memory and a gigabyte of sort buffer.
# Usage: sh pipeline.sh LINES SORT_BUFFER
set -eu
lines=$1
buffer=$2
awk -v n="$lines" 'BEGIN { srand(7); for (i = 0; i < n; i++) printf "%010d,%08d,%s\n", int(rand() * 1e10), i, "the quick brown fox jumps over the lazy dog 0123456789abcdef" }' > data.csv
gzip -1 -c data.csv > data.csv.gz
sort --parallel=2 -S "$buffer" -T . -t, -k1,1 data.csv > sorted.csv
rm -f data.csv
xz -T2 -2 -k -f sorted.csv
cut -c1-5 sorted.csv | uniq -c > index.txt
rm -f sorted.csv sorted.csv.xz data.csv.gz
