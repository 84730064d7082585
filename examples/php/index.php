<?php
// A plain PHP application, unchanged for cohort: native PHP sessions
// (PHPSESSID), a counter, uploads, a health check. Run by cohort with
//   --app-command 'php -S 127.0.0.1:$PORT index.php' --app-session-cookie PHPSESSID
// (see README.md). cohort tells it its node in COHORT_NODE_ID and, with
// --redis-addr, its store in COHORT_REDIS_ADDR.
$node = getenv('COHORT_NODE_ID') ?: 'standalone';
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

function json_out($v, int $code = 200): void {
    $body = json_encode($v) . "\n";
    http_response_code($code);
    header('Content-Type: application/json');
    // With its length, cohort's front reads an answer whole before it
    // passes it on: if this node dies mid-answer, the request is retried
    // on another node instead of reaching the client cut short
    // (docs/front.md, Errors). php -S sends none of its own.
    header('Content-Length: ' . strlen($body));
    echo $body;
}

// Sessions: in cohort's replicated store when the node serves the Redis
// protocol (--redis-addr: cohort hands the app COHORT_REDIS_ADDR) and
// php-redis is loaded, so a session survives its node's death; else PHP's
// default local files (sticky only). The same as these php.ini lines:
//   session.save_handler = redis
//   session.save_path = "tcp://127.0.0.1:6379"
//   redis.session.locking_enabled = 0   ; the lock's release is a Lua script: not served
// A handler set by the operator (php -d / php.ini) other than files is kept.
$redis = getenv('COHORT_REDIS_ADDR');
if ($redis && extension_loaded('redis') && ini_get('session.save_handler') === 'files') {
    ini_set('session.save_handler', 'redis');
    ini_set('session.save_path', "tcp://$redis");
    ini_set('redis.session.locking_enabled', '0');
}
$store = ini_get('session.save_handler');

// Uploads go to the shared directory when cohort mounts one, else here.
$files = getenv('COHORT_FILES_DIR') ?: (__DIR__ . '/uploads-' . $node);

switch (true) {
case $path === '/health':
    // Take every node out with a file "maintenance" beside this script,
    // one node with "maintenance-NODE".
    header('Content-Type: text/plain');
    if (file_exists(__DIR__ . '/maintenance') || file_exists(__DIR__ . "/maintenance-$node")) {
        http_response_code(503);
        echo "maintenance\n";
        break;
    }
    echo "ok\n";
    break;

case $path === '/counter':
    if ($_SERVER['REQUEST_METHOD'] === 'POST') {
        if (!session_start()) {
            json_out(['error' => 'session store unavailable', 'node' => $node], 503);
            break;
        }
        $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
        // Stored before the answer: an acknowledged increment is saved.
        if (!session_write_close()) {
            json_out(['error' => 'session not saved', 'node' => $node], 503);
            break;
        }
    } elseif (!session_start(['read_and_close' => true])) {
        // A read never writes the session back (no lock: a GET beside a
        // POST of the same session must not undo the increment).
        json_out(['error' => 'session store unavailable', 'node' => $node], 503);
        break;
    }
    json_out(['count' => $_SESSION['count'] ?? 0, 'user' => $_SESSION['user'] ?? null,
        'node' => $node, 'session' => session_id(), 'store' => $store]);
    break;

case $path === '/login' && $_SERVER['REQUEST_METHOD'] === 'POST':
    session_start();
    session_regenerate_id(true);
    $_SESSION['user'] = $_POST['user'] ?? 'anonymous';
    session_write_close();
    json_out(['user' => $_SESSION['user'], 'node' => $node, 'store' => $store]);
    break;

case $path === '/upload' && $_SERVER['REQUEST_METHOD'] === 'POST':
    if (!isset($_FILES['file']) || $_FILES['file']['error'] !== UPLOAD_ERR_OK) {
        json_out(['error' => 'send a multipart field "file"'], 400);
        break;
    }
    @mkdir($files, 0777, true);
    $name = basename($_FILES['file']['name']);
    if (!move_uploaded_file($_FILES['file']['tmp_name'], "$files/$name")) {
        json_out(['error' => "cannot store the upload in $files", 'node' => $node], 500);
        break;
    }
    json_out(['name' => $name, 'size' => filesize("$files/$name"), 'node' => $node]);
    break;

case str_starts_with($path, '/files/'):
    $name = basename(substr($path, 7));
    if (!is_file("$files/$name")) {
        json_out(['error' => 'no such file'], 404);
        break;
    }
    header('Content-Type: application/octet-stream');
    readfile("$files/$name");
    break;

case $path === '/jobs/tick' && $_SERVER['REQUEST_METHOD'] === 'POST':
    // A leader-only job of the app (jobs file: http: {path: /jobs/tick}):
    // cohort calls it on the leader with the run's key and fencing token.
    $line = sprintf("%s %s %s %s\n", $node, $_SERVER['HTTP_X_COHORT_FENCE'] ?? '-',
        $_SERVER['HTTP_X_COHORT_RUN_KEY'] ?? '-', $_SERVER['HTTP_X_COHORT_SCHEDULED_AT'] ?? '-');
    file_put_contents(($files) . '-jobs.log', $line, FILE_APPEND | LOCK_EX);
    json_out(['ok' => true, 'node' => $node]);
    break;

case $path === '/headers':
    // What the app received: cohort's headers, and none a client forged.
    $h = [];
    foreach ($_SERVER as $k => $v) {
        if (str_starts_with($k, 'HTTP_')) {
            $h[str_replace('_', '-', substr($k, 5))] = $v;
        }
    }
    ksort($h);
    json_out(['node' => $node, 'headers' => $h]);
    break;

case $path === '/':
    session_start();
    $n = $_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
    session_write_close();
    header('Content-Type: text/html; charset=utf-8');
    $e = htmlspecialchars($node);
    echo "<!doctype html><title>PHP on cohort</title><h1>PHP on cohort</h1>",
         "<p>Served by node <b>$e</b>; you have loaded this page $n times in this session.</p>",
         "<form method=post action=/upload enctype=multipart/form-data>",
         "<input type=file name=file> <button>Upload</button></form>";
    break;

default:
    json_out(['error' => 'not found'], 404);
}
