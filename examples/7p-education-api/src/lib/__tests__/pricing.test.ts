import {
  couponPercent,
  formatCents,
  MAX_TOTAL_DISCOUNT_PERCENT,
  normalizeCouponCode,
  quotePrice,
  UnknownCouponError,
} from '../pricing';

describe('couponPercent', () => {
  it('is 0 without a coupon', () => {
    expect(couponPercent(undefined)).toBe(0);
    expect(couponPercent(null)).toBe(0);
    expect(couponPercent('   ')).toBe(0);
  });

  it('matches codes case-insensitively and ignores surrounding spaces', () => {
    expect(couponPercent(' welcome10 ')).toBe(10);
    expect(couponPercent('STUDENT20')).toBe(20);
  });

  it('throws UnknownCouponError for unknown codes', () => {
    expect(() => couponPercent('FREE100')).toThrow(UnknownCouponError);
    expect(() => couponPercent('FREE100')).toThrow('unknown coupon code: FREE100');
  });

  it('normalizes codes', () => {
    expect(normalizeCouponCode(' scholar50\n')).toBe('SCHOLAR50');
  });
});

describe('quotePrice', () => {
  it('charges the list price without discounts', () => {
    expect(quotePrice(4999)).toEqual({
      listPriceCents: 4999,
      discountPercent: 0,
      discountCents: 0,
      finalPriceCents: 4999,
    });
  });

  it('adds the course discount and the coupon', () => {
    const quote = quotePrice(10_000, 15, 'welcome10');
    expect(quote.discountPercent).toBe(25);
    expect(quote.discountCents).toBe(2500);
    expect(quote.finalPriceCents).toBe(7500);
  });

  it(`caps the combined discount at ${MAX_TOTAL_DISCOUNT_PERCENT}%`, () => {
    const quote = quotePrice(10_000, 60, 'SCHOLAR50');
    expect(quote.discountPercent).toBe(MAX_TOTAL_DISCOUNT_PERCENT);
    expect(quote.finalPriceCents).toBe(2000);
  });

  it('rounds the discount to whole cents, half up', () => {
    // 10% of 1005 cents is 100.5 -> 101 off.
    expect(quotePrice(1005, 10).finalPriceCents).toBe(904);
    expect(quotePrice(999, 20).finalPriceCents).toBe(799);
  });

  it('keeps free courses free', () => {
    expect(quotePrice(0, 50, 'STUDENT20').finalPriceCents).toBe(0);
  });

  it('rejects negative or fractional inputs', () => {
    expect(() => quotePrice(-1)).toThrow(RangeError);
    expect(() => quotePrice(10.5)).toThrow(RangeError);
    expect(() => quotePrice(100, -5)).toThrow(RangeError);
    expect(() => quotePrice(100, 2.5)).toThrow(RangeError);
  });

  it('rejects unknown coupons', () => {
    expect(() => quotePrice(100, 0, 'NOPE')).toThrow(UnknownCouponError);
  });
});

describe('formatCents', () => {
  it.each([
    [0, '€0.00'],
    [5, '€0.05'],
    [12345, '€123.45'],
    [-250, '-€2.50'],
  ])('formats %p as %p', (cents, text) => {
    expect(formatCents(cents)).toBe(text);
  });
});
