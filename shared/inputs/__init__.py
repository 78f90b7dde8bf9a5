"""Images by reference: a URL, a direct upload's id, or an object of a source bucket,
accepted in place of an image's bytes and fetched by the worker (refs), the fetching
itself (fetch), direct uploads (uploads), bucket sources (sources), and the worker's
step that turns a job's references into stored inputs (resolve)."""
