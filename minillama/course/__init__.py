"""The course machinery: building lessons from solutions, running notebooks, grading."""
