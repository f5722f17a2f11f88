"""Instructor grading: ``handbook grade SUBMISSIONS --solutions solutions/ --out OUT``.

The grader is built so that an instructor can trust its numbers even when a submission is
broken or hostile. Three kinds of process take part, and only the last one runs student code:

- the **main process** (``cli``, ``submissions``, ``report``) reads the solution notebooks and
  every submitted file as plain data, hands the answers to checker processes, and writes the
  gradebook, feedback and Gradescope results at the end, from its own in-memory results;
- a **checker process** (``checker``, ``protocol``) per worker runs only instructor code: it
  rebuilds each student notebook from the solutions (test cells restored by grade_id), runs it
  in a student kernel, calls the student's functions through plain values (JSON and numpy arrays
  loaded without pickle) and compares them with the reference answers in its own namespace;
- the **student kernel** (``sandbox``, ``landlock``) runs the submission in a scratch directory
  with time and memory limits and, where Linux allows, no write access outside it.

Modules: ``submissions`` (discover and validate submitted files), ``report`` (grades.csv,
totals.csv, feedback HTML, manual grading, Gradescope results.json, the summary), ``cli`` (the
command and ``grade_batch``), ``checker``, ``protocol``, ``sandbox``, ``landlock``.
"""
