"""The Sudoku generator: every board has exactly one solution (checked by the solver and by the rules), givens stay in
the asked range, and a seed fixes the boards."""

import numpy as np
import pytest

from benchmarks import sudoku


def follows_the_rules(solution: np.ndarray) -> bool:
    grid = solution.reshape(9, 9)
    boxes = grid.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    return all(sorted(unit) == list(range(1, 10)) for part in (grid, grid.T, boxes) for unit in part)


def test_boards_have_one_solution_that_follows_the_rules_and_extends_the_givens():
    boards = sudoku.make_boards(4, seed=7, min_givens=17, max_givens=30)
    for puzzle, solution in zip(boards["puzzles"], boards["solutions"]):
        count, found = sudoku.count_solutions(puzzle, limit=3)
        assert count == 1 and np.array_equal(found, solution)
        assert follows_the_rules(solution)
        given = puzzle > 0
        assert np.array_equal(puzzle[given], solution[given])
        assert 17 <= given.sum() <= 40  # the target is at most 30; a stuck blanking order may stop above it


def swappable_rectangle(grid: np.ndarray):
    """Returns the four cells (rows in one band, columns in two bands) holding digits a, b / b, a, or None."""
    for r1 in range(9):
        for r2 in range(r1 + 1, 3 * (r1 // 3) + 3):
            for c1 in range(9):
                for c2 in range(3 * (c1 // 3) + 3, 9):
                    if grid[r1, c1] == grid[r2, c2] and grid[r1, c2] == grid[r2, c1]:
                        return [r1, r1, r2, r2], [c1, c2, c1, c2]
    return None


def test_the_solver_counts_several_solutions_and_none():
    # Blanking a rectangle a b / b a whose rows share a band leaves two solutions: the digits can swap.
    for seed in range(50):
        solution = sudoku.make_boards(1, seed=seed)["solutions"][0]
        cells = swappable_rectangle(solution.reshape(9, 9))
        if cells is not None:
            break
    assert cells is not None, "no grid among 50 has a swappable rectangle"
    holed = solution.reshape(9, 9).copy()
    holed[cells] = 0
    assert sudoku.count_solutions(holed.reshape(81), limit=5)[0] == 2
    clash = solution.copy()
    clash[1] = clash[0]  # two equal digits in the first row
    assert sudoku.count_solutions(clash)[0] == 0


def test_a_seed_fixes_the_boards_and_bad_arguments_are_named():
    a, b = sudoku.make_boards(2, seed=3), sudoku.make_boards(2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["puzzles"], sudoku.make_boards(2, seed=4)["puzzles"])
    with pytest.raises(ValueError, match="min_givens <= max_givens"):
        sudoku.make_boards(1, seed=0, min_givens=30, max_givens=20)
    with pytest.raises(ValueError, match="81 digits in 0..9"):
        sudoku.count_solutions([0] * 80)
