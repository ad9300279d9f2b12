/** Coupon codes accepted at enrollment, with the percentage they take off. */
export const COUPONS: ReadonlyMap<string, number> = new Map([
  ['WELCOME10', 10],
  ['STUDENT20', 20],
  ['SCHOLAR50', 50],
]);

/** Combined discounts never take more than this share off the list price. */
export const MAX_TOTAL_DISCOUNT_PERCENT = 80;

export class UnknownCouponError extends Error {
  constructor(public readonly code: string) {
    super(`unknown coupon code: ${code}`);
    this.name = 'UnknownCouponError';
  }
}

export interface PriceQuote {
  listPriceCents: number;
  discountPercent: number;
  discountCents: number;
  finalPriceCents: number;
}

export function normalizeCouponCode(code: string): string {
  return code.trim().toUpperCase();
}

export function couponPercent(code: string | undefined | null): number {
  if (code === undefined || code === null || code.trim() === '') return 0;
  const percent = COUPONS.get(normalizeCouponCode(code));
  if (percent === undefined) throw new UnknownCouponError(code);
  return percent;
}

/**
 * Price of one enrollment: the course's own discount plus an optional coupon, added up and
 * capped at {@link MAX_TOTAL_DISCOUNT_PERCENT}. Amounts are integer cents; the discount is
 * rounded to the nearest cent in the student's favour (half up).
 */
export function quotePrice(
  listPriceCents: number,
  courseDiscountPercent = 0,
  couponCode?: string | null,
): PriceQuote {
  if (!Number.isInteger(listPriceCents) || listPriceCents < 0) {
    throw new RangeError('listPriceCents must be a non-negative integer');
  }
  if (!Number.isInteger(courseDiscountPercent) || courseDiscountPercent < 0) {
    throw new RangeError('courseDiscountPercent must be a non-negative integer');
  }
  const discountPercent = Math.min(
    courseDiscountPercent + couponPercent(couponCode),
    MAX_TOTAL_DISCOUNT_PERCENT,
  );
  const discountCents = Math.round((listPriceCents * discountPercent) / 100);
  return {
    listPriceCents,
    discountPercent,
    discountCents,
    finalPriceCents: listPriceCents - discountCents,
  };
}

/** Formats integer cents as a EUR amount, e.g. 12345 -> "€123.45". */
export function formatCents(cents: number): string {
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  const euros = Math.floor(abs / 100);
  const rest = String(abs % 100).padStart(2, '0');
  return `${sign}€${euros}.${rest}`;
}
