// Child of test/storage/sqlite-store.test.ts: opens the store in the data dir given as the first
// argument and prints the StoreError message (or "opened"), so the test can run it as another
// user (root ignores file modes).
import { openStore } from '../../src/storage/sqlite-store.ts';

try {
  openStore(process.argv[2]!).close();
  process.stdout.write('opened');
} catch (err) {
  process.stdout.write((err as Error).message);
}
